"""Every SQL statement of the charities service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
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


# The kinds of ledger entry the totals know: the sellers' donations (accrual, reversal)
# and the sponsors' matches (match, match_reversal), which are totalled apart.
FOLDED_KINDS = frozenset({"accrual", "reversal", "match", "match_reversal"})

# One statement per batch. Each entry is kept once in ledger_entry (by entry_id), and
# that insert is the duplicate guard: only the entries it inserted count (a second table
# of applied ids cost an index insert per entry for nothing). Entries folded before
# ledger_entry existed (migration 0030) are only in applied_entry, which is no longer
# written: an entry found there is not folded again. Each (project, currency) total row
# and each daily bucket is written once with the batch's sums; a seller raises
# seller_count only when its (project, seller) pair is new (only an accrual makes a seller
# a donor; a match is the sponsor's money). Rows are written in key order so that
# concurrent consumers lock them in the same order.
_SUMS = """
           coalesce(sum(amount_minor) FILTER (WHERE kind = 'accrual'), 0),
           coalesce(sum(amount_minor) FILTER (WHERE kind = 'reversal'), 0),
           coalesce(sum(CASE kind WHEN 'match' THEN amount_minor
                                  WHEN 'match_reversal' THEN -amount_minor END), 0),
           count(*) FILTER (WHERE kind = 'accrual')"""
_FOLD = f"""
WITH input AS (
    SELECT * FROM unnest($1::fold_entry[])
), kept AS (
    INSERT INTO ledger_entry (entry_id, order_id, project_id, seller_id, currency, kind,
                              amount_minor, campaign_id, recorded_at, available_on)
    SELECT * FROM input ORDER BY entry_id
    ON CONFLICT (entry_id) DO NOTHING
    RETURNING entry_id
), fresh AS (
    SELECT entry_id FROM kept
    WHERE NOT EXISTS (SELECT 1 FROM applied_entry AS a WHERE a.entry_id = kept.entry_id)
), new_entry AS (
    SELECT input.* FROM input JOIN fresh USING (entry_id)
), new_seller AS (
    INSERT INTO project_seller (project_id, currency, seller_id)
    SELECT DISTINCT project_id, currency, seller_id FROM new_entry WHERE kind = 'accrual'
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
    RETURNING project_id, currency
), seller_delta AS (
    SELECT project_id, currency, count(*) AS sellers FROM new_seller GROUP BY 1, 2
), delta (project_id, currency, donated_minor, reversed_minor, matched_minor, donation_count,
         last_donation_at) AS (
    SELECT project_id, currency, {_SUMS},
           max(recorded_at) FILTER (WHERE kind = 'accrual')
    FROM new_entry GROUP BY 1, 2
), daily AS (
    INSERT INTO project_daily AS d
        (project_id, currency, day, donated_minor, reversed_minor, matched_minor,
         donation_count)
    SELECT project_id, currency, (recorded_at AT TIME ZONE 'UTC')::date, {_SUMS}
    FROM new_entry GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (project_id, currency, day) DO UPDATE SET
        donated_minor = d.donated_minor + excluded.donated_minor,
        reversed_minor = d.reversed_minor + excluded.reversed_minor,
        matched_minor = d.matched_minor + excluded.matched_minor,
        donation_count = d.donation_count + excluded.donation_count
), total AS (
    INSERT INTO project_total AS t
        (project_id, currency, donated_minor, reversed_minor, matched_minor, donation_count,
         seller_count, last_donation_at, version, updated_at)
    SELECT delta.project_id, delta.currency, delta.donated_minor, delta.reversed_minor,
           delta.matched_minor, delta.donation_count, coalesce(seller_delta.sellers, 0),
           delta.last_donation_at, 1, clock_timestamp()
    FROM delta LEFT JOIN seller_delta USING (project_id, currency)
    ORDER BY 1, 2
    ON CONFLICT (project_id, currency) DO UPDATE SET
        donated_minor = t.donated_minor + excluded.donated_minor,
        reversed_minor = t.reversed_minor + excluded.reversed_minor,
        matched_minor = t.matched_minor + excluded.matched_minor,
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


async def fold_entries(conn: Conn, rows: LedgerRows) -> int:
    """Keeps the entries not seen before and adds them to the totals; returns how many
    were new."""
    applied: int = await conn.fetchval(
        _FOLD,
        # one parameter of rows (migration 0180): asyncpg checks each element of an array
        # parameter against collections.abc classes in Python, once per row here instead
        # of once per column and row with ten parallel arrays
        list(
            zip(
                rows.entry_id,
                rows.order_id,
                rows.project_id,
                rows.seller_id,
                rows.currency,
                rows.kind,
                rows.amount_minor,
                rows.campaign_id,
                rows.recorded_at,
                rows.available_on,
                strict=True,
            )
        ),
    )
    return applied


# --- reading totals --------------------------------------------------------------------

# Posted and disbursed money beside the folded totals (``f``: project_funds or its sums).
_FUNDS_COLUMNS = (
    "coalesce(f.posted_minor, 0) AS posted_minor, "
    "coalesce(f.disbursed_minor, 0) AS disbursed_minor, f.updated_at AS funds_updated_at"
)


async def clock(conn: Conn) -> Row:
    row: Row | None = await conn.fetchrow("SELECT version, changed_at FROM change_clock")
    assert row is not None, "migration 0001 inserts the clock row"
    return row


async def replay_status(conn: Conn) -> Row:
    """On a hot standby: whether it is one, the WAL it has replayed, the commit time of the
    last transaction it replayed, and its clock."""
    row: Row | None = await conn.fetchrow(
        """
        SELECT pg_is_in_recovery() AS in_recovery,
               pg_last_wal_replay_lsn()::text AS replayed,
               pg_last_xact_replay_timestamp() AS replayed_at,
               now() AS now
        """
    )
    assert row is not None
    return row


async def wal_bytes_behind(conn: Conn, replayed: str) -> int:
    """How many bytes of the primary's WAL lie beyond ``replayed`` (0 when none)."""
    behind: int = await conn.fetchval(
        "SELECT greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn), 0)::bigint",
        replayed,
    )
    return behind


async def project_totals(conn: Conn, project_id: uuid.UUID) -> list[Row]:
    """The project's registry row joined with its total rows (one per currency seen)."""
    return await conn.fetch(
        f"""
        SELECT p.project_id AS registered, p.currency AS project_currency,
               p.created_at, t.*, {_FUNDS_COLUMNS}
        FROM (SELECT $1::uuid AS project_id) AS k
        LEFT JOIN project AS p ON p.project_id = k.project_id
        LEFT JOIN project_total AS t ON t.project_id = k.project_id
        LEFT JOIN project_funds AS f ON f.project_id = k.project_id AND f.currency = t.currency
        """,
        project_id,
    )


async def charity_totals(conn: Conn, charity_id: uuid.UUID) -> list[Row]:
    """Per currency sums over the charity's projects; seller_count counts each seller once."""
    return await conn.fetch(
        f"""
        WITH p AS (SELECT project_id FROM project WHERE charity_id = $1),
        sums AS (
            SELECT t.currency, sum(t.donated_minor) AS donated_minor,
                   sum(t.reversed_minor) AS reversed_minor,
                   sum(t.matched_minor) AS matched_minor,
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
        ), f AS (
            SELECT f.currency, sum(f.posted_minor) AS posted_minor,
                   sum(f.disbursed_minor) AS disbursed_minor,
                   max(f.updated_at) AS updated_at
            FROM project_funds AS f JOIN p USING (project_id)
            GROUP BY f.currency
        )
        SELECT sums.*, coalesce(sellers.seller_count, 0) AS seller_count, {_FUNDS_COLUMNS}
        FROM sums LEFT JOIN sellers USING (currency) LEFT JOIN f USING (currency)
        ORDER BY sums.currency
        """,
        charity_id,
    )


async def all_totals(conn: Conn) -> list[Row]:
    """Every registered project (zeros if nothing folded yet) and every total row."""
    return await conn.fetch(
        f"""
        SELECT coalesce(p.project_id, t.project_id) AS project_id,
               coalesce(t.currency, p.currency) AS currency,
               coalesce(t.donated_minor, 0) AS donated_minor,
               coalesce(t.reversed_minor, 0) AS reversed_minor,
               coalesce(t.matched_minor, 0) AS matched_minor,
               coalesce(t.donation_count, 0) AS donation_count,
               coalesce(t.seller_count, 0) AS seller_count,
               t.last_donation_at,
               greatest(coalesce(t.updated_at, p.created_at), f.updated_at) AS as_of,
               p.name, p.charity_id, c.name AS charity_name, p.goal_minor, p.status,
               p.created_at, {_FUNDS_COLUMNS}
        FROM project AS p
        FULL JOIN project_total AS t
          ON t.project_id = p.project_id AND t.currency = p.currency
        LEFT JOIN charity AS c ON c.charity_id = p.charity_id
        LEFT JOIN project_funds AS f
          ON f.project_id = coalesce(p.project_id, t.project_id)
         AND f.currency = coalesce(t.currency, p.currency)
        ORDER BY c.name NULLS LAST, p.created_at NULLS LAST, 1, 2
        """
    )


async def daily_totals(
    conn: Conn, project_id: uuid.UUID, currency: str, start: date, end: date
) -> list[Row]:
    return await conn.fetch(
        """
        SELECT day, donated_minor, reversed_minor, matched_minor, donation_count
        FROM project_daily
        WHERE project_id = $1 AND currency = $2 AND day BETWEEN $3 AND $4
        ORDER BY day
        """,
        project_id,
        currency,
        start,
        end,
    )


# --- ledger entries and postings (what allocation draws on) ------------------------------


@dataclass(frozen=True)
class LedgerRows:
    """A batch of ledger entries of every known kind as parallel arrays."""

    entry_id: Sequence[uuid.UUID]
    order_id: Sequence[str]
    project_id: Sequence[uuid.UUID]
    seller_id: Sequence[str]
    currency: Sequence[str]
    kind: Sequence[str]
    amount_minor: Sequence[int]
    campaign_id: Sequence[str | None]
    recorded_at: Sequence[datetime]
    available_on: Sequence[datetime | None]


@dataclass(frozen=True)
class PostingColumns:
    order_id: Sequence[str]
    project_id: Sequence[uuid.UUID]
    seller_id: Sequence[str]
    currency: Sequence[str]
    posted_minor: Sequence[int]
    posted_at: Sequence[datetime]


async def bump_clock(conn: Conn) -> None:
    """Taken before any project_funds row in a transaction (postings, disbursements), so
    the two always lock in the same order."""
    await conn.execute(f"{_BUMP_CLOCK} WHERE id = 1")


# A posting makes its order's entries allocatable, net per order: the order's seller
# entries (accruals minus reversals) and, per campaign, its match entries (matches minus
# match reversals) each form a group whose net is spread over the group's positive
# entries oldest first (reversals use up the newest); reversals get 0. The project's
# posted money grows by the sum, so posted - disbursed is always what FIFO can still take.
_APPLY_POSTINGS = """
WITH input AS (
    SELECT DISTINCT ON (order_id) * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[],
                                                $5::bigint[], $6::timestamptz[])
        AS t(order_id, project_id, seller_id, currency, posted_minor, posted_at)
    ORDER BY order_id, posted_at
), entry AS (
    SELECT e.entry_id, e.order_id, e.project_id, e.currency, e.amount_minor, e.recorded_at,
           i.posted_at, e.kind IN ('accrual', 'match') AS positive,
           CASE WHEN e.kind IN ('match', 'match_reversal') THEN coalesce(e.campaign_id, '') END
               AS campaign
    FROM ledger_entry AS e JOIN input AS i USING (order_id)
    WHERE NOT EXISTS (SELECT 1 FROM order_posting AS p WHERE p.order_id = e.order_id)
), netted AS (
    SELECT entry.*,
           sum(CASE WHEN positive THEN amount_minor ELSE -amount_minor END)
               OVER (PARTITION BY order_id, campaign) AS group_net,
           sum(CASE WHEN positive THEN amount_minor ELSE 0 END)
               OVER (PARTITION BY order_id, campaign, positive
                     ORDER BY recorded_at, entry_id ROWS UNBOUNDED PRECEDING) - amount_minor
               AS before
    FROM entry
), share AS (
    SELECT entry_id, order_id, project_id, currency, posted_at,
           CASE WHEN positive THEN least(amount_minor, greatest(0, group_net - before))
                ELSE 0 END AS allocatable_minor
    FROM netted
), fresh AS (
    INSERT INTO order_posting (order_id, project_id, seller_id, currency, posted_minor,
                               allocatable_minor, posted_at)
    SELECT i.order_id, i.project_id, i.seller_id, i.currency,
           i.posted_minor,
           coalesce((SELECT sum(s.allocatable_minor) FROM share AS s
                     WHERE s.order_id = i.order_id), 0),
           i.posted_at
    FROM input AS i ORDER BY i.order_id
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
), marked AS (
    UPDATE ledger_entry AS e
    SET posted_at = s.posted_at, allocatable_minor = s.allocatable_minor
    FROM share AS s JOIN fresh USING (order_id)
    WHERE e.entry_id = s.entry_id
), funds AS (
    INSERT INTO project_funds AS f (project_id, currency, posted_minor, updated_at)
    SELECT s.project_id, s.currency, sum(s.allocatable_minor), clock_timestamp()
    FROM share AS s JOIN fresh USING (order_id)
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (project_id, currency) DO UPDATE SET
        posted_minor = f.posted_minor + excluded.posted_minor,
        updated_at = excluded.updated_at
)
SELECT count(*) FROM fresh
"""


async def apply_postings(conn: Conn, postings: PostingColumns) -> int:
    """Applies the postings not applied before; returns how many were new."""
    applied: int = await conn.fetchval(
        _APPLY_POSTINGS,
        postings.order_id,
        postings.project_id,
        postings.seller_id,
        postings.currency,
        postings.posted_minor,
        postings.posted_at,
    )
    return applied


# --- disbursements ---------------------------------------------------------------------

_DISBURSEMENT_COLUMNS = (
    "disbursement_id, project_id, currency, amount_minor, recipient, purpose, "
    "evidence_sha256, evidence_url, recorded_at, allocations_count"
)


async def lock_project(conn: Conn, project_id: uuid.UUID) -> Row | None:
    """The project's row, locked until the transaction ends: disbursements of one project
    take turns here."""
    row: Row | None = await conn.fetchrow(
        f"SELECT {_PROJECT_COLUMNS} FROM project WHERE project_id = $1 FOR UPDATE", project_id
    )
    return row


async def get_disbursement(conn: Conn, disbursement_id: uuid.UUID) -> Row | None:
    row: Row | None = await conn.fetchrow(
        f"SELECT {_DISBURSEMENT_COLUMNS} FROM disbursement WHERE disbursement_id = $1",
        disbursement_id,
    )
    return row


async def available_minor(conn: Conn, project_id: uuid.UUID, currency: str) -> int:
    available: Decimal | None = await conn.fetchval(  # numeric: sums never overflow
        "SELECT posted_minor - disbursed_minor FROM project_funds"
        " WHERE project_id = $1 AND currency = $2",
        project_id,
        currency,
    )
    return int(available) if available is not None else 0


async def fifo_candidates(
    conn: Conn, project_id: uuid.UUID, currency: str, amount_minor: int
) -> list[Row]:
    """The oldest posted entries with money left, just enough of them to cover the amount
    (all of them if they hold less), oldest first."""
    return await conn.fetch(
        """
        SELECT entry_id, remaining_minor FROM (
            SELECT entry_id, posted_at, recorded_at,
                   allocatable_minor - allocated_minor AS remaining_minor,
                   sum(allocatable_minor - allocated_minor)
                       OVER (ORDER BY posted_at, recorded_at, entry_id ROWS UNBOUNDED PRECEDING)
                   - (allocatable_minor - allocated_minor) AS before
            FROM ledger_entry
            WHERE project_id = $1 AND currency = $2 AND allocated_minor < allocatable_minor
        ) AS q
        WHERE before < $3
        ORDER BY posted_at, recorded_at, entry_id
        """,
        project_id,
        currency,
        amount_minor,
    )


async def insert_disbursement(
    conn: Conn,
    *,
    disbursement_id: uuid.UUID,
    project_id: uuid.UUID,
    currency: str,
    amount_minor: int,
    recipient: str,
    purpose: str,
    evidence_sha256: str | None,
    evidence_url: str | None,
    entry_ids: Sequence[uuid.UUID],
    amounts: Sequence[int],
) -> Row | None:
    """The new disbursement with its allocations and the entries' allocated amounts, in
    one statement; None if the id exists already (created concurrently)."""
    row: Row | None = await conn.fetchrow(
        f"""
        WITH created AS (
            INSERT INTO disbursement (disbursement_id, project_id, currency, amount_minor,
                                      recipient, purpose, evidence_sha256, evidence_url,
                                      allocations_count)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, cardinality($9::uuid[]))
            ON CONFLICT (disbursement_id) DO NOTHING
            RETURNING {_DISBURSEMENT_COLUMNS}
        ), input AS (
            SELECT * FROM unnest($9::uuid[], $10::bigint[]) AS t(entry_id, amount_minor)
            WHERE EXISTS (SELECT 1 FROM created)
        ), allocated AS (
            INSERT INTO allocation (disbursement_id, entry_id, amount_minor)
            SELECT $1, entry_id, amount_minor FROM input
        ), entries AS (
            UPDATE ledger_entry AS e SET allocated_minor = e.allocated_minor + input.amount_minor
            FROM input WHERE e.entry_id = input.entry_id
        )
        SELECT * FROM created
        """,
        disbursement_id,
        project_id,
        currency,
        amount_minor,
        recipient,
        purpose,
        evidence_sha256,
        evidence_url,
        entry_ids,
        amounts,
    )
    return row


async def add_disbursed(conn: Conn, project_id: uuid.UUID, currency: str, amount: int) -> None:
    await conn.execute(
        """
        UPDATE project_funds
        SET disbursed_minor = disbursed_minor + $3, updated_at = clock_timestamp()
        WHERE project_id = $1 AND currency = $2
        """,
        project_id,
        currency,
        amount,
    )


async def list_disbursements(
    conn: Conn, project_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Row]:
    after_at, after_id = after if after is not None else (None, None)
    return await conn.fetch(
        f"""
        SELECT {_DISBURSEMENT_COLUMNS} FROM disbursement
        WHERE project_id = $1
          AND ($2::timestamptz IS NULL OR (recorded_at, disbursement_id) > ($2, $3::uuid))
        ORDER BY recorded_at, disbursement_id
        LIMIT $4
        """,
        project_id,
        after_at,
        after_id,
        limit,
    )


# --- the trace of an order ---------------------------------------------------------------


async def order_summary(conn: Conn, order_id: str) -> Row | None:
    """The order's project, currency, seller net, matched net and whether it is posted;
    None if no entry of the order is known."""
    row: Row | None = await conn.fetchrow(
        """
        SELECT e.project_id, e.currency,
               coalesce(sum(CASE e.kind WHEN 'accrual' THEN e.amount_minor
                                        WHEN 'reversal' THEN -e.amount_minor END), 0)::bigint
                   AS net_minor,
               coalesce(sum(CASE e.kind WHEN 'match' THEN e.amount_minor
                                        WHEN 'match_reversal' THEN -e.amount_minor END), 0)::bigint
                   AS matched_minor,
               EXISTS (SELECT 1 FROM order_posting AS p WHERE p.order_id = $1) AS posted
        FROM ledger_entry AS e
        WHERE e.order_id = $1
        GROUP BY e.project_id, e.currency
        ORDER BY count(*) DESC, e.project_id
        LIMIT 1
        """,
        order_id,
    )
    return row


async def order_allocations(conn: Conn, order_id: str) -> list[Row]:
    return await conn.fetch(
        """
        SELECT a.disbursement_id, a.entry_id, a.amount_minor, d.recipient, d.purpose,
               d.recorded_at
        FROM ledger_entry AS e
        JOIN allocation AS a USING (entry_id)
        JOIN disbursement AS d USING (disbursement_id)
        WHERE e.order_id = $1
        ORDER BY d.recorded_at, a.disbursement_id, e.recorded_at, a.entry_id
        """,
        order_id,
    )


# --- transparency log -----------------------------------------------------------------

# UUIDs as text, as the leaves write them; record keys come in as text.
_DISBURSEMENT_LEAF_ROWS = """
SELECT disbursement_id::text, project_id::text, currency, amount_minor, recipient, purpose,
       evidence_sha256, recorded_at
FROM disbursement WHERE disbursement_id = ANY($1::text[]::uuid[])
"""
# Record keys '<disbursement_id>:<entry_id>' are split here, found by the primary key.
_ALLOCATION_LEAF_ROWS = """
SELECT k.record_key, a.disbursement_id::text, a.entry_id::text, a.amount_minor
FROM unnest($1::text[]) AS k(record_key)
JOIN allocation AS a ON a.disbursement_id = split_part(k.record_key, ':', 1)::uuid
                    AND a.entry_id = split_part(k.record_key, ':', 2)::uuid
"""
_DISBURSEMENT_LOG_KEYS = """
SELECT d.disbursement_id::text AS disbursement_key, a.log_key AS allocation_key
FROM disbursement AS d LEFT JOIN allocation AS a USING (disbursement_id)
WHERE d.disbursement_id = $1
"""


async def disbursement_leaf_rows(conn: Conn, ids: Sequence[str]) -> list[Row]:
    """The columns of those disbursements' leaves (the ones that exist)."""
    return list(await conn.fetch(_DISBURSEMENT_LEAF_ROWS, ids))


async def allocation_leaf_rows(conn: Conn, record_keys: Sequence[str]) -> list[Row]:
    """The columns of the leaves of the allocations with those log record keys (the ones
    that exist), each with its ``record_key``."""
    return list(await conn.fetch(_ALLOCATION_LEAF_ROWS, record_keys))


async def disbursement_log_keys(
    conn: Conn, disbursement_id: uuid.UUID
) -> tuple[str, list[str]] | None:
    """The log record keys of the disbursement and of its allocations; None if unknown."""
    rows = await conn.fetch(_DISBURSEMENT_LOG_KEYS, disbursement_id)
    if not rows:
        return None
    return rows[0]["disbursement_key"], [
        r["allocation_key"] for r in rows if r["allocation_key"] is not None
    ]
