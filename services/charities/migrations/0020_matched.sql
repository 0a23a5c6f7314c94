-- Sponsors' matches (ledger entries of kind match / match_reversal) are totalled apart
-- from the sellers' donations: matched_minor is matches minus match reversals.
ALTER TABLE project_total ADD COLUMN matched_minor bigint NOT NULL DEFAULT 0;
ALTER TABLE project_daily ADD COLUMN matched_minor bigint NOT NULL DEFAULT 0;
