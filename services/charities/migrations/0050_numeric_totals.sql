-- Totals are sums of amounts of at most 10^15 minor units each: after ~9,224 such
-- entries a bigint sum overflows, the fold fails and every later entry of the project
-- is dead-lettered. The sums are numeric (exact, unbounded); entries stay bigint.
ALTER TABLE project_total
    ALTER COLUMN donated_minor TYPE numeric,
    ALTER COLUMN reversed_minor TYPE numeric,
    ALTER COLUMN matched_minor TYPE numeric;
ALTER TABLE project_daily
    ALTER COLUMN donated_minor TYPE numeric,
    ALTER COLUMN reversed_minor TYPE numeric,
    ALTER COLUMN matched_minor TYPE numeric;
-- Posted and disbursed money are sums of postings and disbursements: the same bound.
ALTER TABLE project_funds
    ALTER COLUMN posted_minor TYPE numeric,
    ALTER COLUMN disbursed_minor TYPE numeric;
