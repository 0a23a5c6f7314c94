"""The donations log's leaves: what a ledger entry (and, once they exist, a posting) is
in the transparency log. Pure functions plus the ``LeafSource`` the sequencer calls.

A leaf is canonical JSON as every log of the project writes it (``shared.tlog.leaf``:
keys sorted, no spaces, RFC 3339 UTC microsecond timestamps). An order id never
appears in clear: ``order_commitment`` is the lower-case hex SHA-256 of
UTF-8(order_id) || 0x00 || salt, with the order's 16 random salt bytes (docs/LOG.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from services.donations import repository
from shared.db import Conn
from shared.tlog.leaf import canonical_json, format_time

Row: TypeAlias = Mapping[str, Any] | asyncpg.Record

LEDGER_TABLE = "ledger_entry"
POSTING_TABLE = "posting"
# Kinds recorded under a matching campaign: no seller rule (rule_version is null).
MATCH_KINDS = frozenset({"match", "match_reversal"})


def order_commitment(order_id: str, salt: bytes) -> str:
    return hashlib.sha256(order_id.encode("utf-8") + b"\x00" + salt).hexdigest()


def _uuid(value: Any) -> str | None:
    return None if value is None else str(value)


def entry_leaf(row: Row, recorded_at: str | None = None) -> bytes:
    """The leaf of a ledger entry, from its row (``repository.ledger_leaf_rows``);
    ``recorded_at`` is the row's time already formatted, if the caller has it."""
    kind: str = row["kind"]
    match = kind in MATCH_KINDS
    return canonical_json(
        {
            "type": "entry",
            "entry_id": str(row["entry_id"]),
            "kind": kind,
            "amount_minor": int(row["amount_minor"]),
            "currency": row["currency"],
            "project_id": str(row["project_id"]),
            "seller_id": row["seller_id"],
            "rule_version": None if match else row["rule_version"],
            "campaign_id": _uuid(row["campaign_id"]) if match else None,
            "order_commitment": order_commitment(row["order_id"], bytes(row["salt"])),
            "recorded_at": recorded_at or format_time(row["recorded_at"]),
        }
    )


def posting_leaf(row: Row) -> bytes:
    """The leaf of a posting (an order's donation made final), from its row
    (``repository.posting_leaf_rows``)."""
    return canonical_json(
        {
            "type": "posting",
            "order_commitment": order_commitment(row["order_id"], bytes(row["salt"])),
            "project_id": str(row["project_id"]),
            "seller_id": row["seller_id"],
            "currency": row["currency"],
            "posted_minor": int(row["posted_minor"]),
            "posted_at": format_time(row["posted_at"]),
        }
    )


def entry_leaves(rows: Sequence[Row]) -> dict[str, bytes]:
    """``entry_leaf`` of each row by seq, formatting each distinct time once (the entries
    of one consumed batch share their recorded_at)."""
    times: dict[datetime, str] = {}
    out: dict[str, bytes] = {}
    for row in rows:
        at = row["recorded_at"]
        text = times.get(at)
        if text is None:
            text = times[at] = format_time(at)
        out[str(row["seq"])] = entry_leaf(row, text)
    return out


class LedgerLeaves:
    """The sequencer's source of ledger entry leaves (record key: the entry's seq)."""

    table = LEDGER_TABLE

    async def leaves(self, conn: Conn, keys: Sequence[str]) -> dict[str, bytes]:
        return entry_leaves(await repository.ledger_leaf_rows(conn, [int(k) for k in keys]))


class PostingLeaves:
    """The sequencer's source of posting leaves (record key: the posting's seq)."""

    table = POSTING_TABLE

    async def leaves(self, conn: Conn, keys: Sequence[str]) -> dict[str, bytes]:
        rows = await repository.posting_leaf_rows(conn, [int(k) for k in keys])
        return {str(row["seq"]): posting_leaf(row) for row in rows}


# The record tables of the donations log.
LEAF_SOURCES = (LedgerLeaves(), PostingLeaves())
