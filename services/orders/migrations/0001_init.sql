-- Orders, their refunds, and the transactional outbox (shared.outbox DDL).
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

CREATE TABLE outbox (
    id             bigserial   PRIMARY KEY,
    topic          text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    type           text        NOT NULL,
    payload        bytea       NOT NULL,
    bucket         smallint    NOT NULL
        GENERATED ALWAYS AS ((hashtext(aggregate_id) & 2147483647) % 16) STORED,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_bucket_id ON outbox (bucket, id);

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
