-- Posted and disbursed money per project and currency, beside project_total (its own
-- table: postings and disbursements update it without touching the folded totals' rows).
-- available_minor = posted_minor - disbursed_minor.
CREATE TABLE project_funds (
    project_id      uuid        NOT NULL,
    currency        text        NOT NULL,
    posted_minor    bigint      NOT NULL DEFAULT 0,
    disbursed_minor bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (project_id, currency),
    CHECK (disbursed_minor >= 0 AND disbursed_minor <= posted_minor)
);
