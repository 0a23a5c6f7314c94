-- Per-entry ledger rows, per-order postings, disbursements and their FIFO allocations.
--
-- Entries folded before this migration are in the totals but not here: they are never
-- allocated (their postings find no entries to make allocatable).

CREATE TABLE ledger_entry (
    entry_id          uuid        PRIMARY KEY,
    order_id          text        NOT NULL,
    project_id        uuid        NOT NULL,
    seller_id         text        NOT NULL,
    currency          text        NOT NULL,
    kind              text        NOT NULL
        CHECK (kind IN ('accrual', 'reversal', 'match', 'match_reversal')),
    amount_minor      bigint      NOT NULL CHECK (amount_minor >= 0),
    campaign_id       text,
    recorded_at       timestamptz NOT NULL,
    available_on      timestamptz,
    -- Set when the order's posting is applied: the posting time, and what allocation may
    -- take from this entry (an accrual or a match net of the order's reversals of it; 0
    -- for reversals). NULL while the order is pending.
    posted_at         timestamptz,
    allocatable_minor bigint      CHECK (allocatable_minor >= 0),
    allocated_minor   bigint      NOT NULL DEFAULT 0,
    CHECK (allocated_minor >= 0 AND allocated_minor <= coalesce(allocatable_minor, 0))
);
CREATE INDEX ledger_entry_order ON ledger_entry (order_id);
-- The FIFO queue of a project: posted entries with money left, oldest first.
CREATE INDEX ledger_entry_fifo ON ledger_entry (project_id, currency, posted_at, recorded_at, entry_id)
    WHERE allocated_minor < allocatable_minor;

-- One row per posted order (a posting happens once; a redelivered one inserts nothing).
CREATE TABLE order_posting (
    order_id          text        PRIMARY KEY,
    project_id        uuid        NOT NULL,
    seller_id         text        NOT NULL,
    currency          text        NOT NULL,
    posted_minor      bigint      NOT NULL,  -- as the donation.posted event says
    allocatable_minor bigint      NOT NULL,  -- the sum of its entries' allocatable amounts
    posted_at         timestamptz NOT NULL,
    applied_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE disbursement (
    disbursement_id   uuid        PRIMARY KEY,
    project_id        uuid        NOT NULL REFERENCES project (project_id),
    currency          text        NOT NULL,
    amount_minor      bigint      NOT NULL CHECK (amount_minor > 0),
    recipient         text        NOT NULL,
    purpose           text        NOT NULL,
    evidence_sha256   text,
    evidence_url      text,
    recorded_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    allocations_count integer     NOT NULL
);
CREATE INDEX disbursement_project ON disbursement (project_id, recorded_at, disbursement_id);

-- One row per (disbursement, ledger entry).
CREATE TABLE allocation (
    disbursement_id uuid   NOT NULL REFERENCES disbursement (disbursement_id),
    entry_id        uuid   NOT NULL REFERENCES ledger_entry (entry_id),
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    PRIMARY KEY (disbursement_id, entry_id)
);
CREATE INDEX allocation_entry ON allocation (entry_id);
