-- supersedes: 3fafa36196fa42599eae2ed29aadcfa4c034162f69b0fa315047debf912b4678
--   (that version also created the outbox, which 0002_outbox.sql now includes from
--   shared.outbox; a database migrated with it has the same tables.)
-- Seller rules: every change is a new row; the version in effect at an order's
-- placed_at is the latest one with effective_from <= placed_at.
CREATE TABLE donation_rule (
    seller_id      text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    project_id     uuid        NOT NULL,
    mode           text        NOT NULL CHECK (mode IN ('fixed', 'percent')),
    amount_minor   bigint      CHECK (amount_minor >= 0),
    basis_points   integer     CHECK (basis_points BETWEEN 1 AND 10000),
    min_minor      bigint      CHECK (min_minor >= 0),
    max_minor      bigint      CHECK (max_minor >= 0),
    currency       text        NOT NULL,
    active         boolean     NOT NULL,
    effective_from timestamptz NOT NULL,
    PRIMARY KEY (seller_id, version),
    CHECK (mode <> 'fixed' OR (amount_minor IS NOT NULL AND basis_points IS NULL)),
    CHECK (mode <> 'percent' OR (basis_points IS NOT NULL AND amount_minor IS NULL)),
    CHECK (min_minor IS NULL OR max_minor IS NULL OR min_minor <= max_minor)
);

-- The ledger: append-only. event_key names the event that produced an entry
-- ('accrual' for order.completed, 'refund:<refund_id>' for order.refunded), so a
-- redelivered event hits the unique key and records nothing. entry_id is a UUIDv5 of
-- (order_id, event_key), hence unique by construction and stable across redeliveries.
CREATE TABLE ledger_entry (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id     uuid        NOT NULL,
    order_id     text        NOT NULL,
    event_key    text        NOT NULL,
    seller_id    text        NOT NULL,
    project_id   uuid        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('accrual', 'reversal')),
    amount_minor bigint      NOT NULL CHECK (amount_minor > 0),
    currency     text        NOT NULL,
    rule_version integer     NOT NULL,
    event_id     uuid        NOT NULL,
    recorded_at  timestamptz NOT NULL,
    UNIQUE (order_id, event_key)
);
CREATE INDEX ledger_entry_seller_seq ON ledger_entry (seller_id, seq);
