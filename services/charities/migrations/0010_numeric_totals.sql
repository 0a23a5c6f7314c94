-- Totals are sums of amounts of at most 10^15 minor units each: after ~9,224 such
-- entries a bigint sum overflows, the fold fails and every later entry of the project
-- is dead-lettered. The sums are numeric (exact, unbounded); entries stay bigint.
ALTER TABLE project_total
    ALTER COLUMN donated_minor TYPE numeric,
    ALTER COLUMN reversed_minor TYPE numeric;
ALTER TABLE project_daily
    ALTER COLUMN donated_minor TYPE numeric,
    ALTER COLUMN reversed_minor TYPE numeric;
