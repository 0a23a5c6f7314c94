"""Every SQL statement of the donations service; batch paths are set-based (unnest)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

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
SELECT order_id, min(seller_id) AS seller_id, (array_agg(project_id))[1] AS project_id,
       min(currency) AS currency, min(rule_version) AS rule_version,
       sum(CASE kind WHEN 'accrual' THEN amount_minor ELSE -amount_minor END)::bigint AS net_minor,
       array_agg(event_key) AS keys
FROM ledger_entry WHERE order_id = ANY($1::text[])
GROUP BY order_id
"""
_INSERT_ENTRIES = """
INSERT INTO ledger_entry (entry_id, order_id, event_key, seller_id, project_id, kind,
                          amount_minor, currency, rule_version, event_id, recorded_at)
SELECT e.*, $11::timestamptz
FROM unnest($1::text[]::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[],
            $7::bigint[], $8::text[], $9::int[], $10::uuid[]) AS e
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
        recorded_at,
    )
    return {r["entry_id"] for r in rows}


_ENTRY_COLUMNS = """seq, entry_id, order_id, seller_id, project_id, kind, amount_minor, currency,
rule_version, recorded_at"""
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
