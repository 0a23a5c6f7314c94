-- Registry of charities and projects, and the totals folded from donations.ledger.

CREATE TABLE charity (
    charity_id      uuid        PRIMARY KEY,
    name            text        NOT NULL,
    registration_no text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A registration number identifies one charity: creating it again is a retry (200) or a
-- conflict (409), never a second charity.
CREATE UNIQUE INDEX charity_registration_no ON charity (registration_no)
    WHERE registration_no IS NOT NULL;
CREATE INDEX charity_created_at ON charity (created_at, charity_id);

CREATE TABLE project (
    project_id  uuid        PRIMARY KEY,
    charity_id  uuid        NOT NULL REFERENCES charity (charity_id),
    name        text        NOT NULL,
    description text,
    currency    text        NOT NULL,
    goal_minor  bigint      CHECK (goal_minor >= 0),
    status      text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    closed_at   timestamptz,
    UNIQUE (charity_id, name)
);
CREATE INDEX project_created_at ON project (created_at, project_id);
CREATE INDEX project_charity_created_at ON project (charity_id, created_at, project_id);

-- Entries already folded into the totals: a redelivered entry inserts nothing here and
-- so adds nothing anywhere.
CREATE TABLE applied_entry (
    entry_id   uuid PRIMARY KEY,
    project_id uuid NOT NULL
);

-- One row per project and currency (a project has one currency; the key keeps a stray
-- entry in another currency from being summed with it). Updated once per batch.
CREATE TABLE project_total (
    project_id       uuid        NOT NULL,
    currency         text        NOT NULL,
    donated_minor    bigint      NOT NULL DEFAULT 0,
    reversed_minor   bigint      NOT NULL DEFAULT 0,
    donation_count   bigint      NOT NULL DEFAULT 0,
    seller_count     bigint      NOT NULL DEFAULT 0,
    last_donation_at timestamptz,
    version          bigint      NOT NULL DEFAULT 1,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (project_id, currency)
);

-- Distinct donating sellers per project: only newly inserted pairs raise seller_count.
CREATE TABLE project_seller (
    project_id uuid NOT NULL,
    currency   text NOT NULL,
    seller_id  text NOT NULL,
    PRIMARY KEY (project_id, currency, seller_id)
);

-- Daily buckets (UTC date of recorded_at) for the time series.
CREATE TABLE project_daily (
    project_id     uuid   NOT NULL,
    currency       text   NOT NULL,
    day            date   NOT NULL,
    donated_minor  bigint NOT NULL DEFAULT 0,
    reversed_minor bigint NOT NULL DEFAULT 0,
    donation_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, currency, day)
);

-- One transactional counter bumped by every change that /v1/totals shows (a folded
-- batch, a new or closed project, a new charity): its value is that response's ETag.
-- Unlike a sequence it only moves when the change commits, in commit order.
CREATE TABLE change_clock (
    id         smallint    PRIMARY KEY CHECK (id = 1),
    version    bigint      NOT NULL,
    changed_at timestamptz NOT NULL
);
INSERT INTO change_clock (id, version, changed_at) VALUES (1, 1, clock_timestamp());
