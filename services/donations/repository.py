"""Every SQL statement of the donations service; batch paths are set-based (unnest)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg

from services.donations.ledger import NewEntry, OrderLedger
from services.donations.matching import Campaign
from services.donations.rules import RuleVersion
from shared.db import Conn
from shared.tlog import store

_RULE_COLUMNS = """seller_id, version, project_id, mode, amount_minor, basis_points, min_minor,
max_minor, currency, active, effective_from, per_item"""


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
        per_item=row["per_item"],
    )


# --- rules -----------------------------------------------------------------------------

_LOCK_SELLER = "SELECT pg_advisory_xact_lock(hashtext('donation_rule'), hashtext($1))"
_CURRENT = f"""
SELECT {_RULE_COLUMNS} FROM donation_rule WHERE seller_id = $1 ORDER BY version DESC LIMIT 1
"""
_INSERT_RULE = f"""
INSERT INTO donation_rule ({_RULE_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
        greatest(clock_timestamp(), $11::timestamptz), $12::jsonb)
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
        dict(rule.per_item),
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

# The seller's side of an order (accruals and reversals); matches are the sponsors'.
_LEDGERS = """
SELECT e.order_id, min(e.seller_id) AS seller_id, (array_agg(e.project_id))[1] AS project_id,
       min(e.currency) AS currency, min(e.rule_version) AS rule_version,
       sum(CASE e.kind WHEN 'accrual' THEN e.amount_minor
                       WHEN 'reversal' THEN -e.amount_minor ELSE 0 END)::bigint AS net_minor,
       coalesce(sum(e.item_minor), 0)::bigint AS item_minor,
       array_agg(e.event_key) AS keys, max(e.available_on) AS available_on,
       EXISTS (SELECT 1 FROM posting p WHERE p.order_id = e.order_id) AS posted
FROM ledger_entry e WHERE e.order_id = ANY($1::text[])
GROUP BY e.order_id
"""
# The batch's entries are COPied into a staging table dropped at commit, then inserted
# from it in one statement: COPY's binary rows cost the client a third less than
# encoding thirteen arrays for unnest. Accruals also join the orders waiting for their
# posting (with the orders.lifecycle partition their events are on), in that statement.
_STAGE_ENTRIES = """
CREATE TEMP TABLE ledger_entry_stage (
    entry_id uuid, order_id text, event_key text, seller_id text, project_id uuid, kind text,
    amount_minor bigint, currency text, rule_version int, event_id uuid, campaign_id text,
    item_minor bigint, available_on timestamptz, kafka_partition int
) ON COMMIT DROP
"""
_STAGE_COLUMNS = (
    "entry_id",
    "order_id",
    "event_key",
    "seller_id",
    "project_id",
    "kind",
    "amount_minor",
    "currency",
    "rule_version",
    "event_id",
    "campaign_id",
    "item_minor",
    "available_on",
    "kafka_partition",
)
_INSERT_STAGED = """
WITH e AS (
    INSERT INTO ledger_entry (entry_id, order_id, event_key, seller_id, project_id, kind,
                              amount_minor, currency, rule_version, event_id, campaign_id,
                              item_minor, available_on, recorded_at)
    SELECT entry_id, order_id, event_key, seller_id, project_id, kind, amount_minor,
           currency, rule_version, event_id, campaign_id, item_minor, available_on,
           $1::timestamptz
    FROM ledger_entry_stage
    ON CONFLICT (order_id, event_key) DO NOTHING
    RETURNING entry_id, order_id, kind, available_on
), due AS (
    INSERT INTO posting_due (order_id, kafka_partition, available_on)
    SELECT e.order_id, coalesce(s.kafka_partition, -1), e.available_on
    FROM e JOIN ledger_entry_stage s USING (entry_id)
    WHERE e.kind = 'accrual'
    ON CONFLICT (order_id) DO NOTHING
)
SELECT entry_id::text FROM e
"""
# Dropped at once too: a transaction stages twice when its batch is matched.
_DROP_STAGE = "DROP TABLE ledger_entry_stage"
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
            item_minor=row["item_minor"],
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
    """Inserts ``entries`` (COPY, then one statement); returns the ids of those not
    recorded before. Inside the caller's transaction (the staging table lives until its
    commit).

    Each new accrual's order waits for its posting (``posting_due``), filed under its
    partition in ``partitions`` (order_id -> orders.lifecycle partition; -1 if absent).
    """
    if not entries:
        return set()
    partition = (partitions or {}).get
    await conn.execute(_STAGE_ENTRIES)
    await conn.copy_records_to_table(
        "ledger_entry_stage",
        records=[
            (
                e.entry_id,
                e.order_id,
                e.event_key,
                e.seller_id,
                e.project_id,
                e.kind,
                e.amount_minor,
                e.currency,
                e.rule_version,
                e.event_id,
                e.campaign_id,
                e.item_minor,
                e.available_on,
                partition(e.order_id) if e.kind == "accrual" else None,
            )
            for e in entries
        ],
        columns=_STAGE_COLUMNS,
    )
    rows = await conn.fetch(_INSERT_STAGED, recorded_at)
    await conn.execute(_DROP_STAGE)
    return {r["entry_id"] for r in rows}


_ENTRY_COLUMNS = """seq, entry_id, order_id, seller_id, project_id, kind, amount_minor, currency,
rule_version, campaign_id, recorded_at, available_on"""
_ORDER_ENTRIES = f"SELECT {_ENTRY_COLUMNS} FROM ledger_entry WHERE order_id = $1 ORDER BY seq"
# A seller's statement is its own donations: sponsors' matches on its orders are not in it.
_SELLER_ENTRIES = f"""
SELECT {_ENTRY_COLUMNS} FROM ledger_entry
WHERE seller_id = $1 AND seq > $2 AND kind IN ('accrual', 'reversal') ORDER BY seq LIMIT $3
"""
# numeric: a seller's entries (each at most 10^15) can sum past bigint's 2^63.
_SELLER_TOTALS = """
SELECT currency,
       sum(CASE kind WHEN 'accrual' THEN amount_minor ELSE -amount_minor END) AS net_minor
FROM ledger_entry WHERE seller_id = $1 AND kind IN ('accrual', 'reversal')
GROUP BY currency ORDER BY currency
"""


async def order_entries(conn: Conn, order_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(_ORDER_ENTRIES, order_id))


async def seller_entries(
    conn: Conn, seller_id: str, after_seq: int, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(_SELLER_ENTRIES, seller_id, after_seq, limit))


async def seller_totals(conn: Conn, seller_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(_SELLER_TOTALS, seller_id))


# --- campaigns -------------------------------------------------------------------------

_CAMPAIGN_COLUMNS = """campaign_id, sponsor, project_id, ratio_bp, per_item_minor,
per_order_cap_minor, budget_minor, currency, starts_at, ends_at, sellers, closed_at,
matched_minor"""
_INSERT_CAMPAIGN = f"""
INSERT INTO campaign ({_CAMPAIGN_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, 0)
ON CONFLICT (campaign_id) DO NOTHING
RETURNING {_CAMPAIGN_COLUMNS}
"""
_CAMPAIGN = f"SELECT {_CAMPAIGN_COLUMNS} FROM campaign WHERE campaign_id = $1"
_CAMPAIGNS = f"""
SELECT {_CAMPAIGN_COLUMNS} FROM campaign
WHERE campaign_id > $1 AND ($2::uuid IS NULL OR project_id = $2)
ORDER BY campaign_id LIMIT $3
"""
_CLOSE_CAMPAIGN = f"""
UPDATE campaign SET closed_at = coalesce(closed_at, $2::timestamptz)
WHERE campaign_id = $1
RETURNING {_CAMPAIGN_COLUMNS}
"""
# One statement, a fixed lock order (campaign_id): two consumers never deadlock here.
_LOCK_PROJECT_CAMPAIGNS = f"""
SELECT {_CAMPAIGN_COLUMNS} FROM campaign WHERE project_id = ANY($1::uuid[])
ORDER BY campaign_id FOR UPDATE
"""
_ORDER_MATCHES = """
SELECT order_id, campaign_id,
       sum(CASE kind WHEN 'match' THEN amount_minor ELSE -amount_minor END)::bigint AS left_minor
FROM ledger_entry
WHERE order_id = ANY($1::text[]) AND kind IN ('match', 'match_reversal')
GROUP BY order_id, campaign_id
"""
_ADD_MATCHED = """
UPDATE campaign AS c SET matched_minor = c.matched_minor + d.delta
FROM unnest($1::text[], $2::bigint[]) AS d (campaign_id, delta)
WHERE c.campaign_id = d.campaign_id
"""


def campaign_from_row(row: asyncpg.Record) -> Campaign:
    sellers = row["sellers"]
    return Campaign(
        campaign_id=row["campaign_id"],
        sponsor=row["sponsor"],
        project_id=row["project_id"],
        ratio_bp=row["ratio_bp"],
        per_item_minor=row["per_item_minor"],
        per_order_cap_minor=row["per_order_cap_minor"],
        budget_minor=row["budget_minor"],
        currency=row["currency"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        sellers=tuple(sellers) if sellers is not None else None,
        closed_at=row["closed_at"],
        matched_minor=row["matched_minor"],
    )


async def insert_campaign(conn: Conn, c: Campaign) -> Campaign | None:
    """Adds ``c``; None if a campaign with its id exists already."""
    row = await conn.fetchrow(
        _INSERT_CAMPAIGN,
        c.campaign_id,
        c.sponsor,
        c.project_id,
        c.ratio_bp,
        c.per_item_minor,
        c.per_order_cap_minor,
        c.budget_minor,
        c.currency,
        c.starts_at,
        c.ends_at,
        list(c.sellers) if c.sellers is not None else None,
    )
    return campaign_from_row(row) if row is not None else None


async def campaign(conn: Conn, campaign_id: str) -> Campaign | None:
    row = await conn.fetchrow(_CAMPAIGN, campaign_id)
    return campaign_from_row(row) if row is not None else None


async def campaigns(
    conn: Conn, after_id: str, project_id: uuid.UUID | None, limit: int
) -> list[Campaign]:
    return [campaign_from_row(r) for r in await conn.fetch(_CAMPAIGNS, after_id, project_id, limit)]


async def close_campaign(conn: Conn, campaign_id: str, at: datetime) -> Campaign | None:
    row = await conn.fetchrow(_CLOSE_CAMPAIGN, campaign_id, at)
    return campaign_from_row(row) if row is not None else None


async def lock_project_campaigns(conn: Conn, project_ids: Iterable[uuid.UUID]) -> list[Campaign]:
    """Every campaign of ``project_ids``, locked until the transaction ends."""
    return [
        campaign_from_row(r) for r in await conn.fetch(_LOCK_PROJECT_CAMPAIGNS, list(project_ids))
    ]


async def order_matches(conn: Conn, order_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per order, what each campaign's matches still have unreversed, in one query."""
    left: dict[str, dict[str, int]] = {}
    for row in await conn.fetch(_ORDER_MATCHES, list(order_ids)):
        left.setdefault(row["order_id"], {})[row["campaign_id"]] = row["left_minor"]
    return left


async def add_matched(conn: Conn, deltas: dict[str, int]) -> None:
    """Moves each campaign's matched_minor by its delta, in one statement."""
    if deltas:
        await conn.execute(_ADD_MATCHED, list(deltas), list(deltas.values()))


# --- transparency log -----------------------------------------------------------------

# The salt of an order is made once, by the first batch that logs one of its entries:
# 16 bytes of SHA-256 over two random UUIDs (PostgreSQL's strong random source). The
# salts made now come back through RETURNING (the statement's snapshot cannot see them).
# UUIDs come as text (as the leaves write them); campaign_id is null but on matches.
_LEDGER_LEAF_ROWS = """
WITH e AS (
    SELECT seq, entry_id::text, order_id, kind, amount_minor, currency, project_id::text,
           seller_id, rule_version, campaign_id, recorded_at
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
# A posting's order has its salt already (its entries were logged first) unless both
# are in one batch; the same statement makes it then.
_POSTING_LEAF_ROWS = """
WITH p AS (
    SELECT seq, order_id, seller_id, project_id::text, currency, posted_minor, posted_at
    FROM posting WHERE seq = ANY($1::bigint[])
), made AS (
    INSERT INTO order_salt (order_id, salt)
    SELECT p.order_id,
           substring(sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
                     FROM 1 FOR 16)
    FROM p
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id, salt
)
SELECT p.*, coalesce(made.salt, s.salt) AS salt
FROM p LEFT JOIN made USING (order_id) LEFT JOIN order_salt AS s USING (order_id)
"""
# The order's records in the log's tables: its entries in seq order, then its posting
# (entry_id null), each with its leaf (null until sequenced); the salt is the order's
# (null before its first leaf). One round trip for a proof's records and leaves.
_ORDER_LOG_RECORDS = store.with_leaves(
    """
    SELECT r.record_table, r.record_key, r.entry_id, r.part, r.seq, s.salt
    FROM (
        SELECT 'ledger_entry' AS record_table, seq::text AS record_key, entry_id, 0 AS part, seq
        FROM ledger_entry WHERE order_id = $1
        UNION ALL
        SELECT 'posting', seq::text, NULL::uuid, 1, seq FROM posting WHERE order_id = $1
    ) AS r LEFT JOIN order_salt AS s ON s.order_id = $1
    """,
    "r.part, r.seq",
)


async def ledger_leaf_rows(conn: Conn, seqs: Sequence[int]) -> list[asyncpg.Record]:
    """The columns of the entries' leaves with their orders' salts (made if missing)."""
    return list(await conn.fetch(_LEDGER_LEAF_ROWS, seqs))


async def posting_leaf_rows(conn: Conn, seqs: Sequence[int]) -> list[asyncpg.Record]:
    """The columns of the postings' leaves with their orders' salts (made if missing)."""
    return list(await conn.fetch(_POSTING_LEAF_ROWS, seqs))


async def order_log_records(conn: Conn, order_id: str) -> list[asyncpg.Record]:
    """The order's records in the log (record_table, record_key, entry_id: entries, then
    its posting once posted), each with its leaf_index and leaf (null before it is
    sequenced), and its salt (null before its first leaf)."""
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
           -- every kind adds but the reversals (matches add, match reversals subtract)
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
