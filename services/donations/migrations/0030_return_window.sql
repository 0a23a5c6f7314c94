-- The return window: a donation is pending until its order's available_on, then posted
-- once (services/donations/posting.py says when that is safe, and why).

-- When an accrual's order leaves its return window (completed_at + GFG_RETURN_WINDOW_S).
-- Reversals carry none (the order's is on its accrual). Accruals recorded before this migration get their recorded_at
-- plus the default window of 7 days (their completed_at was not kept, and recorded_at is
-- never earlier than it).
ALTER TABLE ledger_entry ADD COLUMN available_on timestamptz;
UPDATE ledger_entry SET available_on = recorded_at + interval '604800 seconds'
WHERE kind = 'accrual';
ALTER TABLE ledger_entry ADD CONSTRAINT ledger_entry_available_on
    CHECK (kind = 'accrual' OR available_on IS NULL);

-- How far the consumer of orders.lifecycle got, per partition, written in the same
-- transaction as the batch it applied: the next offset to apply and the latest
-- occurred_at applied (the partition's event-time watermark).
CREATE TABLE consumer_position (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    next_offset     bigint      NOT NULL,
    max_occurred_at timestamptz,
    PRIMARY KEY (topic, kafka_partition)
);

-- Orders whose donation is not posted yet: one row per accrual, added with it, deleted
-- by the posting that posts the order. kafka_partition is the orders.lifecycle partition
-- the order's events are on (-1: not known, for accruals from before this migration;
-- such an order waits until every partition is safe).
CREATE TABLE posting_due (
    order_id        text        PRIMARY KEY,
    kafka_partition integer     NOT NULL,
    available_on    timestamptz NOT NULL
);
CREATE INDEX posting_due_available_on ON posting_due (kafka_partition, available_on);
INSERT INTO posting_due (order_id, kafka_partition, available_on)
SELECT order_id, -1, available_on FROM ledger_entry WHERE kind = 'accrual'
ON CONFLICT (order_id) DO NOTHING;

-- Postings: insert-only, one per order (the unique key makes a second posting of an
-- order impossible, whatever runs the job twice).
CREATE TABLE posting (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     text        NOT NULL UNIQUE,
    seller_id    text        NOT NULL,
    project_id   uuid        NOT NULL,
    currency     text        NOT NULL,
    posted_minor bigint      NOT NULL CHECK (posted_minor >= 0),
    posted_at    timestamptz NOT NULL
);
