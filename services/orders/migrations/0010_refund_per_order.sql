-- A refund_id names a refund of one order: two storefronts (or two orders) may use the
-- same refund_id. It was the whole key, so one storefront's id blocked every other's.
ALTER TABLE order_refund DROP CONSTRAINT order_refund_pkey;
ALTER TABLE order_refund ADD PRIMARY KEY (order_id, refund_id);
-- The new key's prefix serves lookups by order.
DROP INDEX order_refund_order;
