"""Every SQL statement of the charities service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeAlias

import asyncpg

from shared.db import Conn

Row: TypeAlias = asyncpg.Record

# --- registry ------------------------------------------------------------------------

_CHARITY_COLUMNS = "charity_id, name, registration_no, created_at"
_PROJECT_COLUMNS = (
    "project_id, charity_id, name, description, currency, goal_minor, status, created_at, closed_at"
)
_BUMP_CLOCK = "UPDATE change_clock SET version = version + 1, changed_at = clock_timestamp()"


async def insert_charity(
    conn: Conn, charity_id: uuid.UUID, name: str, registration_no: str | None
) -> Row | None:
    """The new charity, or None when the registration number is already registered."""
    row: Row | None = await conn.fetchrow(
        f"""
        WITH created AS (
            INSERT INTO charity (charity_id, name, registration_no) VALUES ($1, $2, $3)
            ON CONFLICT (registration_no) WHERE registration_no IS NOT NULL DO NOTHING
            RETURNING {_CHARITY_COLUMNS}
        ), bumped AS (
            {_BUMP_CLOCK} WHERE id = 1 AND EXISTS (SELECT 1 FROM created)
        )
        SELECT * FROM created
        """,
        charity_id,
        name,
        registration_no,
    )
    return row


async def charity_by_registration_no(conn: Conn, registration_no: str) -> Row | None:
    row: Row | None = await conn.fetchrow(
        f"SELECT {_CHARITY_COLUMNS} FROM charity WHERE registration_no = $1", registration_no
    )
    return row


async def get_charity(conn: Conn, charity_id: uuid.UUID) -> Row | None:
    row: Row | None = await conn.fetchrow(
        f"SELECT {_CHARITY_COLUMNS} FROM charity WHERE charity_id = $1", charity_id
    )
    return row


async def list_charities(
    conn: Conn, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Row]:
    if after is None:
        return await conn.fetch(
            f"SELECT {_CHARITY_COLUMNS} FROM charity ORDER BY created_at, charity_id LIMIT $1",
            limit,
        )
    return await conn.fetch(
        f"""
        SELECT {_CHARITY_COLUMNS} FROM charity
        WHERE (created_at, charity_id) > ($1, $2)
        ORDER BY created_at, charity_id LIMIT $3
        """,
        after[0],
        after[1],
        limit,
    )


async def insert_project(
    conn: Conn,
    project_id: uuid.UUID,
    charity_id: uuid.UUID,
    name: str,
    description: str | None,
    currency: str,
    goal_minor: int | None,
) -> Row | None:
    """The new project, or None when the charity already has a project of that name."""
    row: Row | None = await conn.fetchrow(
        f"""
        WITH created AS (
            INSERT INTO project (project_id, charity_id, name, description, currency, goal_minor)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (charity_id, name) DO NOTHING
            RETURNING {_PROJECT_COLUMNS}
        ), bumped AS (
            {_BUMP_CLOCK} WHERE id = 1 AND EXISTS (SELECT 1 FROM created)
        )
        SELECT * FROM created
        """,
        project_id,
        charity_id,
        name,
        description,
        currency,
        goal_minor,
    )
    return row


async def project_by_name(conn: Conn, charity_id: uuid.UUID, name: str) -> Row | None:
    row: Row | None = await conn.fetchrow(
        f"SELECT {_PROJECT_COLUMNS} FROM project WHERE charity_id = $1 AND name = $2",
        charity_id,
        name,
    )
    return row


async def get_project(conn: Conn, project_id: uuid.UUID) -> Row | None:
    row: Row | None = await conn.fetchrow(
        f"SELECT {_PROJECT_COLUMNS} FROM project WHERE project_id = $1", project_id
    )
    return row


async def list_projects(
    conn: Conn,
    *,
    charity_id: uuid.UUID | None,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Row]:
    after_at, after_id = after if after is not None else (None, None)
    return await conn.fetch(
        f"""
        SELECT {_PROJECT_COLUMNS} FROM project
        WHERE ($1::uuid IS NULL OR charity_id = $1)
          AND ($2::text IS NULL OR status = $2)
          AND ($3::timestamptz IS NULL OR (created_at, project_id) > ($3, $4::uuid))
        ORDER BY created_at, project_id
        LIMIT $5
        """,
        charity_id,
        status,
        after_at,
        after_id,
        limit,
    )


async def close_project(conn: Conn, project_id: uuid.UUID) -> Row | None:
    """The project after closing it (unchanged if it was closed already); None if unknown."""
    row: Row | None = await conn.fetchrow(
        f"""
        WITH closed AS (
            UPDATE project SET status = 'closed', closed_at = clock_timestamp()
            WHERE project_id = $1 AND status = 'active'
            RETURNING {_PROJECT_COLUMNS}
        ), bumped AS (
            {_BUMP_CLOCK} WHERE id = 1 AND EXISTS (SELECT 1 FROM closed)
        )
        SELECT * FROM closed
        UNION ALL
        SELECT {_PROJECT_COLUMNS} FROM project
        WHERE project_id = $1 AND NOT EXISTS (SELECT 1 FROM closed)
        """,
        project_id,
    )
    return row


# --- folding the ledger into totals ----------------------------------------------------


@dataclass(frozen=True)
class EntryColumns:
    """A batch of ledger entries as parallel arrays, for one ``unnest``."""

    entry_id: Sequence[uuid.UUID]
    project_id: Sequence[uuid.UUID]
    seller_id: Sequence[str]
    currency: Sequence[str]
    is_accrual: Sequence[bool]
    amount_minor: Sequence[int]
    recorded_at: Sequence[datetime]


# One statement per batch. Only entries whose id was not applied before count; each
# (project, currency) total row and each daily bucket is written once with the batch's
# sums; a seller raises seller_count only when its (project, seller) pair is new. Rows are
# written in key order so that concurrent consumers lock them in the same order.
_FOLD = f"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[],
                         $6::bigint[], $7::timestamptz[])
        AS t(entry_id, project_id, seller_id, currency, is_accrual, amount_minor, recorded_at)
), fresh AS (
    INSERT INTO applied_entry (entry_id, project_id)
    SELECT entry_id, project_id FROM input ORDER BY entry_id
    ON CONFLICT DO NOTHING
    RETURNING entry_id
), new_entry AS (
    SELECT input.* FROM input JOIN fresh USING (entry_id)
), new_seller AS (
    INSERT INTO project_seller (project_id, currency, seller_id)
    SELECT DISTINCT project_id, currency, seller_id FROM new_entry WHERE is_accrual
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
    RETURNING project_id, currency
), seller_delta AS (
    SELECT project_id, currency, count(*) AS sellers FROM new_seller GROUP BY 1, 2
), delta AS (
    SELECT project_id, currency,
           coalesce(sum(amount_minor) FILTER (WHERE is_accrual), 0) AS donated_minor,
           coalesce(sum(amount_minor) FILTER (WHERE NOT is_accrual), 0) AS reversed_minor,
           count(*) FILTER (WHERE is_accrual) AS donation_count,
           max(recorded_at) FILTER (WHERE is_accrual) AS last_donation_at
    FROM new_entry GROUP BY 1, 2
), daily AS (
    INSERT INTO project_daily AS d
        (project_id, currency, day, donated_minor, reversed_minor, donation_count)
    SELECT project_id, currency, (recorded_at AT TIME ZONE 'UTC')::date,
           coalesce(sum(amount_minor) FILTER (WHERE is_accrual), 0),
           coalesce(sum(amount_minor) FILTER (WHERE NOT is_accrual), 0),
           count(*) FILTER (WHERE is_accrual)
    FROM new_entry GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (project_id, currency, day) DO UPDATE SET
        donated_minor = d.donated_minor + excluded.donated_minor,
        reversed_minor = d.reversed_minor + excluded.reversed_minor,
        donation_count = d.donation_count + excluded.donation_count
), total AS (
    INSERT INTO project_total AS t
        (project_id, currency, donated_minor, reversed_minor, donation_count, seller_count,
         last_donation_at, version, updated_at)
    SELECT delta.project_id, delta.currency, delta.donated_minor, delta.reversed_minor,
           delta.donation_count, coalesce(seller_delta.sellers, 0), delta.last_donation_at,
           1, clock_timestamp()
    FROM delta LEFT JOIN seller_delta USING (project_id, currency)
    ORDER BY 1, 2
    ON CONFLICT (project_id, currency) DO UPDATE SET
        donated_minor = t.donated_minor + excluded.donated_minor,
        reversed_minor = t.reversed_minor + excluded.reversed_minor,
        donation_count = t.donation_count + excluded.donation_count,
        seller_count = t.seller_count + excluded.seller_count,
        last_donation_at = greatest(t.last_donation_at, excluded.last_donation_at),
        version = t.version + 1,
        updated_at = excluded.updated_at
), bumped AS (
    {_BUMP_CLOCK} WHERE id = 1 AND EXISTS (SELECT 1 FROM fresh)
)
SELECT count(*) FROM fresh
"""


async def fold_entries(conn: Conn, entries: EntryColumns) -> int:
    """Adds the entries not applied before to the totals; returns how many were new."""
    applied: int = await conn.fetchval(
        _FOLD,
        entries.entry_id,
        entries.project_id,
        entries.seller_id,
        entries.currency,
        entries.is_accrual,
        entries.amount_minor,
        entries.recorded_at,
    )
    return applied


# --- reading totals --------------------------------------------------------------------


async def clock(conn: Conn) -> Row:
    row: Row | None = await conn.fetchrow("SELECT version, changed_at FROM change_clock")
    assert row is not None, "migration 0001 inserts the clock row"
    return row


async def project_totals(conn: Conn, project_id: uuid.UUID) -> list[Row]:
    """The project's registry row joined with its total rows (one per currency seen)."""
    return await conn.fetch(
        """
        SELECT p.project_id AS registered, p.currency AS project_currency,
               p.created_at, t.*
        FROM (SELECT $1::uuid AS project_id) AS k
        LEFT JOIN project AS p ON p.project_id = k.project_id
        LEFT JOIN project_total AS t ON t.project_id = k.project_id
        """,
        project_id,
    )


async def charity_totals(conn: Conn, charity_id: uuid.UUID) -> list[Row]:
    """Per currency sums over the charity's projects; seller_count counts each seller once."""
    return await conn.fetch(
        """
        WITH p AS (SELECT project_id FROM project WHERE charity_id = $1),
        sums AS (
            SELECT t.currency, sum(t.donated_minor) AS donated_minor,
                   sum(t.reversed_minor) AS reversed_minor,
                   sum(t.donation_count)::bigint AS donation_count,
                   max(t.last_donation_at) AS last_donation_at,
                   max(t.updated_at) AS updated_at,
                   sum(t.version)::bigint AS version_sum, count(*) AS rows
            FROM project_total AS t JOIN p USING (project_id)
            GROUP BY t.currency
        ), sellers AS (
            SELECT s.currency, count(DISTINCT s.seller_id) AS seller_count
            FROM project_seller AS s JOIN p USING (project_id)
            GROUP BY s.currency
        )
        SELECT sums.*, coalesce(sellers.seller_count, 0) AS seller_count
        FROM sums LEFT JOIN sellers USING (currency)
        ORDER BY sums.currency
        """,
        charity_id,
    )


async def all_totals(conn: Conn) -> list[Row]:
    """Every registered project (zeros if nothing folded yet) and every total row."""
    return await conn.fetch(
        """
        SELECT coalesce(p.project_id, t.project_id) AS project_id,
               coalesce(t.currency, p.currency) AS currency,
               coalesce(t.donated_minor, 0) AS donated_minor,
               coalesce(t.reversed_minor, 0) AS reversed_minor,
               coalesce(t.donation_count, 0) AS donation_count,
               coalesce(t.seller_count, 0) AS seller_count,
               t.last_donation_at,
               coalesce(t.updated_at, p.created_at) AS as_of,
               p.name, p.charity_id, c.name AS charity_name, p.goal_minor, p.status,
               p.created_at
        FROM project AS p
        FULL JOIN project_total AS t
          ON t.project_id = p.project_id AND t.currency = p.currency
        LEFT JOIN charity AS c ON c.charity_id = p.charity_id
        ORDER BY c.name NULLS LAST, p.created_at NULLS LAST, 1, 2
        """
    )


async def daily_totals(
    conn: Conn, project_id: uuid.UUID, currency: str, start: date, end: date
) -> list[Row]:
    return await conn.fetch(
        """
        SELECT day, donated_minor, reversed_minor, donation_count
        FROM project_daily
        WHERE project_id = $1 AND currency = $2 AND day BETWEEN $3 AND $4
        ORDER BY day
        """,
        project_id,
        currency,
        start,
        end,
    )
