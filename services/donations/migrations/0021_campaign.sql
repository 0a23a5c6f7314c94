-- Sponsor matching campaigns. matched_minor is net of match reversals and is moved once
-- per consumer batch under the row lock; the CHECK is the last line of defence for
-- "the budget is never exceeded".
CREATE TABLE campaign (
    campaign_id         text        PRIMARY KEY,
    sponsor             text        NOT NULL,
    project_id          uuid        NOT NULL,
    ratio_bp            integer     NOT NULL CHECK (ratio_bp >= 0),
    per_item_minor      bigint      NOT NULL CHECK (per_item_minor >= 0),
    per_order_cap_minor bigint      CHECK (per_order_cap_minor >= 0),
    budget_minor        bigint      NOT NULL CHECK (budget_minor > 0),
    currency            text        NOT NULL,
    starts_at           timestamptz NOT NULL,
    ends_at             timestamptz NOT NULL,
    sellers             text[],
    closed_at           timestamptz,
    matched_minor       bigint      NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (ratio_bp > 0 OR per_item_minor > 0),
    CHECK (ends_at > starts_at),
    CHECK (matched_minor BETWEEN 0 AND budget_minor)
);
CREATE INDEX campaign_project ON campaign (project_id, starts_at, campaign_id);

-- Matches are ledger entries too: 'match' (event_key 'match:<campaign_id>') and
-- 'match_reversal' ('match_reversal:<campaign_id>:<refund_id>'), with their campaign and
-- no rule version.
ALTER TABLE ledger_entry
    ADD COLUMN campaign_id text,
    ALTER COLUMN rule_version DROP NOT NULL,
    DROP CONSTRAINT ledger_entry_kind_check,
    ADD CONSTRAINT ledger_entry_kind_check
        CHECK (kind IN ('accrual', 'reversal', 'match', 'match_reversal')),
    ADD CONSTRAINT ledger_entry_campaign_check
        CHECK ((kind IN ('match', 'match_reversal')) = (campaign_id IS NOT NULL)),
    ADD CONSTRAINT ledger_entry_rule_version_check
        CHECK ((kind IN ('match', 'match_reversal')) OR rule_version IS NOT NULL);
CREATE INDEX ledger_entry_campaign ON ledger_entry (campaign_id, seq) WHERE campaign_id IS NOT NULL;
