"""Every SQL statement of the donations service; batch paths are set-based (unnest)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from services.donations.ledger import NewEntry, OrderLedger
from services.donations.matching import Campaign
from services.donations.rules import RuleVersion
from shared.db import Conn

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
SELECT order_id, min(seller_id) AS seller_id, (array_agg(project_id))[1] AS project_id,
       min(currency) AS currency, min(rule_version) AS rule_version,
       sum(CASE kind WHEN 'accrual' THEN amount_minor
                     WHEN 'reversal' THEN -amount_minor ELSE 0 END)::bigint AS net_minor,
       coalesce(sum(item_minor), 0)::bigint AS item_minor,
       array_agg(event_key) AS keys
FROM ledger_entry WHERE order_id = ANY($1::text[])
GROUP BY order_id
"""
_INSERT_ENTRIES = """
INSERT INTO ledger_entry (entry_id, order_id, event_key, seller_id, project_id, kind,
                          amount_minor, currency, rule_version, event_id, campaign_id,
                          item_minor, recorded_at)
SELECT e.*, $13::timestamptz
FROM unnest($1::text[]::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[],
            $7::bigint[], $8::text[], $9::int[], $10::uuid[], $11::text[], $12::bigint[]) AS e
ON CONFLICT (order_id, event_key) DO NOTHING
RETURNING entry_id::text
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
        )
        for row in await conn.fetch(_LEDGERS, list(order_ids))
    }


async def insert_entries(
    conn: Conn, entries: Sequence[NewEntry], recorded_at: datetime
) -> set[str]:
    """Inserts ``entries`` in one statement; returns the ids of those not recorded before."""
    if not entries:
        return set()
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
        [e.campaign_id for e in entries],
        [e.item_minor for e in entries],
        recorded_at,
    )
    return {r["entry_id"] for r in rows}


_ENTRY_COLUMNS = """seq, entry_id, order_id, seller_id, project_id, kind, amount_minor, currency,
rule_version, campaign_id, recorded_at"""
_ORDER_ENTRIES = f"SELECT {_ENTRY_COLUMNS} FROM ledger_entry WHERE order_id = $1 ORDER BY seq"
# A seller's statement is its own donations: sponsors' matches on its orders are not in it.
_SELLER_ENTRIES = f"""
SELECT {_ENTRY_COLUMNS} FROM ledger_entry
WHERE seller_id = $1 AND seq > $2 AND kind IN ('accrual', 'reversal') ORDER BY seq LIMIT $3
"""
_SELLER_TOTALS = """
SELECT currency,
       sum(CASE kind WHEN 'accrual' THEN amount_minor ELSE -amount_minor END)::bigint
           AS net_minor
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
