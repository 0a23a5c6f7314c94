-- One ledger entry as the fold sends it: the fold passes its batch as one array of these
-- rows instead of ten parallel arrays (asyncpg checks every element of an array parameter
-- against collections.abc classes; a row is checked once, not once per column).
CREATE TYPE fold_entry AS (
    entry_id      uuid,
    order_id      text,
    project_id    uuid,
    seller_id     text,
    currency      text,
    kind          text,
    amount_minor  bigint,
    campaign_id   text,
    recorded_at   timestamptz,
    available_on  timestamptz
);
