"""Every SQL statement of the donations service; batch paths are set-based (unnest)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg

from services.donations.ledger import NewEntry, OrderLedger
from services.donations.rules import RuleVersion
from shared.db import Conn

_RULE_COLUMNS = """seller_id, version, project_id, mode, amount_minor, basis_points, min_minor,
max_minor, currency, active, effective_from"""


def rule_from_row(row: asyncpg.Record) -> RuleVersion:
    return RuleVersion(
        seller_id=row["seller_id"],
        version=row["version"],
        project_id=row["project_id"],
        mode=row["mode"],
        amount_minor=row["amount_minor"],
        basis_points=row["basis_points"],
        min_minor=row["min_minor"],
        max_minor=row["max_minor"],
        currency=row["currency"],
        active=row["active"],
        effective_from=row["effective_from"],
    )


# --- rules -----------------------------------------------------------------------------

_LOCK_SELLER = "SELECT pg_advisory_xact_lock(hashtext('donation_rule'), hashtext($1))"
_CURRENT = f"""
SELECT {_RULE_COLUMNS} FROM donation_rule WHERE seller_id = $1 ORDER BY version DESC LIMIT 1
"""
_INSERT_RULE = f"""
INSERT INTO donation_rule ({_RULE_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
        greatest(clock_timestamp(), $11::timestamptz))
RETURNING {_RULE_COLUMNS}
"""
_VERSIONS = f"""
SELECT {_RULE_COLUMNS} FROM donation_rule
WHERE seller_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3
"""
_HISTORIES = f"""
SELECT {_RULE_COLUMNS} FROM donation_rule WHERE seller_id = ANY($1::text[])
ORDER BY seller_id, version
"""


async def lock_seller_rule(conn: Conn, seller_id: str) -> None:
    """Serialises rule changes of one seller (inside the caller's transaction)."""
    await conn.execute(_LOCK_SELLER, seller_id)


async def current_rule(conn: Conn, seller_id: str) -> RuleVersion | None:
    row = await conn.fetchrow(_CURRENT, seller_id)
    return rule_from_row(row) if row is not None else None


async def insert_rule(conn: Conn, rule: RuleVersion, not_before: datetime | None) -> RuleVersion:
    """Adds ``rule``; its effective_from is the server's clock (never before ``not_before``)."""
    row = await conn.fetchrow(
        _INSERT_RULE,
        rule.seller_id,
        rule.version,
        rule.project_id,
        rule.mode,
        rule.amount_minor,
        rule.basis_points,
        rule.min_minor,
        rule.max_minor,
        rule.currency,
        rule.active,
        not_before,
    )
    assert row is not None
    return rule_from_row(row)


async def rule_versions(
    conn: Conn, seller_id: str, before_version: int, limit: int
) -> list[RuleVersion]:
    return [rule_from_row(r) for r in await conn.fetch(_VERSIONS, seller_id, before_version, limit)]


async def rule_histories(conn: Conn, seller_ids: Iterable[str]) -> dict[str, list[RuleVersion]]:
    """Every version of every seller in ``seller_ids``, in version order, in one query."""
    histories: dict[str, list[RuleVersion]] = {}
    for row in await conn.fetch(_HISTORIES, list(seller_ids)):
        histories.setdefault(row["seller_id"], []).append(rule_from_row(row))
    return histories


# --- ledger ----------------------------------------------------------------------------

_LEDGERS = """
SELECT e.order_id, min(e.seller_id) AS seller_id, (array_agg(e.project_id))[1] AS project_id,
       min(e.currency) AS currency, min(e.rule_version) AS rule_version,
       sum(CASE e.kind WHEN 'accrual' THEN e.amount_minor ELSE -e.amount_minor END)::bigint
           AS net_minor,
       array_agg(e.event_key) AS keys, max(e.available_on) AS available_on,
       EXISTS (SELECT 1 FROM posting p WHERE p.order_id = e.order_id) AS posted
FROM ledger_entry e WHERE e.order_id = ANY($1::text[])
GROUP BY e.order_id
"""
# Accruals also join the orders waiting for their posting (with the orders.lifecycle
# partition their events are on), in the same statement.
_INSERT_ENTRIES = """
WITH e AS (
    INSERT INTO ledger_entry (entry_id, order_id, event_key, seller_id, project_id, kind,
                              amount_minor, currency, rule_version, event_id, available_on,
                              recorded_at)
    SELECT e.*, $12::timestamptz
    FROM unnest($1::text[]::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[],
                $6::text[], $7::bigint[], $8::text[], $9::int[], $10::uuid[],
                $11::timestamptz[]) AS e
    ON CONFLICT (order_id, event_key) DO NOTHING
    RETURNING entry_id, order_id, kind, available_on
), due AS (
    INSERT INTO posting_due (order_id, kafka_partition, available_on)
    SELECT e.order_id, coalesce(p.kafka_partition, -1), e.available_on
    FROM e LEFT JOIN unnest($13::text[], $14::int[]) AS p (order_id, kafka_partition)
        USING (order_id)
    WHERE e.kind = 'accrual'
    ON CONFLICT (order_id) DO NOTHING
)
SELECT entry_id::text FROM e
"""
# Waits for a posting of these orders in progress (the posting job locks the rows it
# posts): a refund applied after it sees the order posted, never a half-posted order.
_LOCK_DUE = """
SELECT order_id FROM posting_due WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR SHARE
"""


async def order_ledgers(conn: Conn, order_ids: Iterable[str]) -> dict[str, OrderLedger]:
    """The ledger state so far of each order in ``order_ids`` that has entries, in one query."""
    return {
        row["order_id"]: OrderLedger(
            seller_id=row["seller_id"],
            project_id=row["project_id"],
            currency=row["currency"],
            rule_version=row["rule_version"],
            net_minor=row["net_minor"],
            keys=set(row["keys"]),
            available_on=row["available_on"],
            posted=row["posted"],
        )
        for row in await conn.fetch(_LEDGERS, list(order_ids))
    }


async def lock_due_postings(conn: Conn, order_ids: Iterable[str]) -> None:
    """Waits for any posting of ``order_ids`` in progress (inside the caller's transaction)."""
    await conn.execute(_LOCK_DUE, sorted(order_ids))


async def insert_entries(
    conn: Conn,
    entries: Sequence[NewEntry],
    recorded_at: datetime,
    partitions: Mapping[str, int] | None = None,
) -> set[str]:
    """Inserts ``entries`` in one statement; returns the ids of those not recorded before.

    Each new accrual's order waits for its posting (``posting_due``), filed under its
    partition in ``partitions`` (order_id -> orders.lifecycle partition; -1 if absent).
    """
    if not entries:
        return set()
    partitions = partitions or {}
    rows = await conn.fetch(
        _INSERT_ENTRIES,
        [e.entry_id for e in entries],
        [e.order_id for e in entries],
        [e.event_key for e in entries],
        [e.seller_id for e in entries],
        [e.project_id for e in entries],
        [e.kind for e in entries],
        [e.amount_minor for e in entries],
        [e.currency for e in entries],
        [e.rule_version for e in entries],
        [e.event_id for e in entries],
        [e.available_on for e in entries],
        recorded_at,
        list(partitions),
        list(partitions.values()),
    )
    return {r["entry_id"] for r in rows}


_ENTRY_COLUMNS = """seq, entry_id, order_id, seller_id, project_id, kind, amount_minor, currency,
rule_version, recorded_at, available_on"""
_ORDER_ENTRIES = f"SELECT {_ENTRY_COLUMNS} FROM ledger_entry WHERE order_id = $1 ORDER BY seq"
_SELLER_ENTRIES = f"""
SELECT {_ENTRY_COLUMNS} FROM ledger_entry
WHERE seller_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
# numeric: a seller's entries (each at most 10^15) can sum past bigint's 2^63.
_SELLER_TOTALS = """
SELECT currency,
       sum(CASE kind WHEN 'accrual' THEN amount_minor ELSE -amount_minor END) AS net_minor
FROM ledger_entry WHERE seller_id = $1 GROUP BY currency ORDER BY currency
"""


async def order_entries(conn: Conn, order_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(_ORDER_ENTRIES, order_id))


async def seller_entries(
    conn: Conn, seller_id: str, after_seq: int, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_SELLER_ENTRIES, seller_id, after_seq, limit))


async def seller_totals(conn: Conn, seller_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(_SELLER_TOTALS, seller_id))


# --- transparency log -----------------------------------------------------------------

# The salt of an order is made once, by the first batch that logs one of its entries:
# 16 bytes of SHA-256 over two random UUIDs (PostgreSQL's strong random source). The
# salts made now come back through RETURNING (the statement's snapshot cannot see them).
# UUIDs come as text (as the leaves write them). campaign_id: NULL until the ledger has
# the column (then: ``campaign_id::text``).
_LEDGER_LEAF_ROWS = """
WITH e AS (
    SELECT seq, entry_id::text, order_id, kind, amount_minor, currency, project_id::text,
           seller_id, rule_version, NULL::text AS campaign_id, recorded_at
    FROM ledger_entry WHERE seq = ANY($1::bigint[])
), made AS (
    INSERT INTO order_salt (order_id, salt)
    SELECT o.order_id,
           substring(sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
                     FROM 1 FOR 16)
    FROM (SELECT DISTINCT order_id FROM e) AS o
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id, salt
)
SELECT e.*, coalesce(made.salt, s.salt) AS salt
FROM e LEFT JOIN made USING (order_id) LEFT JOIN order_salt AS s USING (order_id)
"""
_ORDER_LOG_RECORDS = """
SELECT l.seq, l.entry_id, s.salt
FROM ledger_entry AS l LEFT JOIN order_salt AS s USING (order_id)
WHERE l.order_id = $1 ORDER BY l.seq
"""


async def ledger_leaf_rows(conn: Conn, seqs: Sequence[int]) -> list[asyncpg.Record]:
    """The columns of the entries' leaves with their orders' salts (made if missing)."""
    return list(await conn.fetch(_LEDGER_LEAF_ROWS, seqs))


async def order_log_records(conn: Conn, order_id: str) -> list[asyncpg.Record]:
    """The order's entries (seq, entry_id) and its salt (null before its first leaf)."""
    return list(await conn.fetch(_ORDER_LOG_RECORDS, order_id))


# --- consumer positions ------------------------------------------------------------------

_ADVANCE = """
INSERT INTO consumer_position AS c (topic, kafka_partition, next_offset, max_occurred_at)
SELECT $1, p.*
FROM unnest($2::int[], $3::bigint[], $4::timestamptz[]) AS p
ON CONFLICT (topic, kafka_partition) DO UPDATE
SET next_offset = greatest(c.next_offset, excluded.next_offset),
    max_occurred_at = greatest(c.max_occurred_at, excluded.max_occurred_at)
"""
_POSITIONS = """
SELECT kafka_partition, next_offset, max_occurred_at FROM consumer_position WHERE topic = $1
"""


class Position(NamedTuple):
    """How far the consumer got on one partition (both only ever move forward)."""

    next_offset: int
    max_occurred_at: datetime | None


async def advance_positions(conn: Conn, topic: str, positions: Mapping[int, Position]) -> None:
    """Records, in the batch's transaction, how far it got on each partition."""
    if not positions:
        return
    await conn.execute(
        _ADVANCE,
        topic,
        list(positions),
        [p.next_offset for p in positions.values()],
        [p.max_occurred_at for p in positions.values()],
    )


async def consumer_positions(conn: Conn, topic: str) -> dict[int, Position]:
    return {
        row["kafka_partition"]: Position(row["next_offset"], row["max_occurred_at"])
        for row in await conn.fetch(_POSITIONS, topic)
    }


# --- postings ----------------------------------------------------------------------------

# One statement per batch of orders: the due orders whose partition is safe past their
# available_on (locked, skipping those another job or a refund holds), their net from
# the ledger, the postings (the unique order_id refuses a second), and the due rows gone.
_POST_DUE = """
WITH safe AS (
    SELECT * FROM unnest($1::int[], $2::timestamptz[]) AS s (kafka_partition, safe_until)
), due AS (
    SELECT d.order_id
    FROM posting_due d JOIN safe s USING (kafka_partition)
    WHERE d.available_on <= s.safe_until AND d.available_on <= $3::timestamptz
    ORDER BY d.available_on
    LIMIT $4
    FOR UPDATE OF d SKIP LOCKED
), net AS (
    SELECT e.order_id, min(e.seller_id) AS seller_id, (array_agg(e.project_id))[1] AS project_id,
           min(e.currency) AS currency,
           -- every kind adds but the reversals (matches, once they exist, add too)
           sum(CASE WHEN e.kind IN ('reversal', 'match_reversal') THEN -e.amount_minor
                    ELSE e.amount_minor END)::bigint AS posted_minor
    FROM ledger_entry e JOIN due USING (order_id)
    GROUP BY e.order_id
), posted AS (
    INSERT INTO posting (order_id, seller_id, project_id, currency, posted_minor, posted_at)
    SELECT order_id, seller_id, project_id, currency, posted_minor, $3::timestamptz FROM net
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id, seller_id, project_id, currency, posted_minor, posted_at
), gone AS (
    DELETE FROM posting_due d USING due WHERE d.order_id = due.order_id
)
SELECT * FROM posted
"""
_ORDER_POSTING = """
SELECT order_id, seller_id, project_id, currency, posted_minor, posted_at
FROM posting WHERE order_id = $1
"""


async def post_due(
    conn: Conn, safe_until: Mapping[int, datetime], now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Posts up to ``limit`` due orders (inside the caller's transaction); returns the
    postings made. ``safe_until`` maps a partition to the latest ``available_on`` that may
    be posted from it."""
    return list(
        await conn.fetch(_POST_DUE, list(safe_until), list(safe_until.values()), now, limit)
    )


async def order_posting(conn: Conn, order_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(_ORDER_POSTING, order_id)
    return row
