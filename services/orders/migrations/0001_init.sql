-- supersedes: 29e8b1fec08d188d630ceb5c49f2ea0bb27e19531947fcdbe97eb6dacf160974
--   (that version also created the outbox, which 0002_outbox.sql now includes from
--   shared.outbox; a database migrated with it has the same tables.)
-- Orders and their refunds.
CREATE TABLE sales_order (
    order_id       text        PRIMARY KEY,
    seller_id      text        NOT NULL,
    buyer_ref      text,
    currency       text        NOT NULL,
    total_minor    bigint      NOT NULL CHECK (total_minor >= 0),
    items          jsonb       NOT NULL,
    placed_at      timestamptz NOT NULL,
    status         text        NOT NULL
        CHECK (status IN ('placed', 'completed', 'refunded', 'cancelled')),
    completed_at   timestamptz,
    cancelled_at   timestamptz,
    refunded_minor bigint      NOT NULL DEFAULT 0,
    -- Canonical hash of the creating request: a retry with another body is a conflict.
    request_hash   bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (refunded_minor >= 0 AND refunded_minor <= total_minor)
);

CREATE TABLE order_refund (
    refund_id            text        PRIMARY KEY,
    order_id             text        NOT NULL REFERENCES sales_order (order_id),
    amount_minor         bigint      NOT NULL CHECK (amount_minor > 0),
    refunded_total_minor bigint      NOT NULL,
    request_hash         bytea       NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_refund_order ON order_refund (order_id);
