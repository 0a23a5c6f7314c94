"""The charities log's leaves: what a disbursement and an allocation are in the
transparency log. Pure functions plus the ``LeafSource`` of each record table, which the
sequencer calls.

Leaves are canonical JSON as every log of the project writes it (``shared.tlog.leaf``:
keys sorted, no spaces, RFC 3339 UTC microsecond timestamps, UUIDs lower-case with
hyphens), docs/LOG.md:

- ``{"type":"disbursement", "disbursement_id", "project_id", "currency", "amount_minor",
  "recipient", "purpose", "evidence_sha256" (null if none), "recorded_at"}``
- ``{"type":"allocation", "disbursement_id", "entry_id", "amount_minor"}``, where
  ``entry_id`` is the donations ledger entry's id (the one in the donations log's leaf),
  so a donor follows their entry to what it paid for.

An allocation's record key is ``<disbursement_id>:<entry_id>`` (the table's
``log_key`` column).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import asyncpg

from services.charities import repository
from shared.db import Conn
from shared.tlog.leaf import canonical_json, format_time

DISBURSEMENT_TABLE = "disbursement"
ALLOCATION_TABLE = "allocation"

Row: TypeAlias = Mapping[str, Any] | asyncpg.Record


def disbursement_leaf(row: Row) -> bytes:
    """The leaf of a disbursement, from its row (``repository.disbursement_leaf_rows``)."""
    evidence = row["evidence_sha256"]
    return canonical_json(
        {
            "type": "disbursement",
            "disbursement_id": str(row["disbursement_id"]),
            "project_id": str(row["project_id"]),
            "currency": row["currency"],
            "amount_minor": int(row["amount_minor"]),
            "recipient": row["recipient"],
            "purpose": row["purpose"],
            "evidence_sha256": None if evidence is None else str(evidence),
            "recorded_at": format_time(row["recorded_at"]),
        }
    )


def allocation_leaf(row: Row) -> bytes:
    """The leaf of an allocation, from its row (``repository.allocation_leaf_rows``)."""
    return canonical_json(
        {
            "type": "allocation",
            "disbursement_id": str(row["disbursement_id"]),
            "entry_id": str(row["entry_id"]),
            "amount_minor": int(row["amount_minor"]),
        }
    )


class DisbursementLeaves:
    """The sequencer's source of disbursement leaves (record key: the disbursement_id)."""

    table = DISBURSEMENT_TABLE

    async def leaves(self, conn: Conn, keys: Sequence[str]) -> dict[str, bytes]:
        rows = await repository.disbursement_leaf_rows(conn, keys)
        return {r["disbursement_id"]: disbursement_leaf(r) for r in rows}


class AllocationLeaves:
    """The sequencer's source of allocation leaves (key ``<disbursement_id>:<entry_id>``)."""

    table = ALLOCATION_TABLE

    async def leaves(self, conn: Conn, keys: Sequence[str]) -> dict[str, bytes]:
        rows = await repository.allocation_leaf_rows(conn, keys)
        return {r["record_key"]: allocation_leaf(r) for r in rows}


# The record tables of the charities log.
LEAF_SOURCES = (DisbursementLeaves(), AllocationLeaves())
