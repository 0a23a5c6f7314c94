"""A seller's statement totals past 2^63 stay exact (numeric sums of bigint entries)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from services.donations import repository
from services.donations.ledger import NewEntry
from services.donations.rules import entry_id
from shared.money import MAX_MINOR
from tests.conftest import bearer, unique
from tests.integration.donations.conftest import Donations

ENTRIES = 9_300


async def test_statement_totals_past_two_to_the_63(
    donations: Donations, http: httpx.AsyncClient, db: asyncpg.Connection[Any]
) -> None:
    seller = unique("big-seller")
    project = uuid.uuid4()
    orders = [unique("o") for _ in range(ENTRIES)]
    entries = [
        NewEntry(
            entry_id(order_id, "accrual"),
            order_id,
            "accrual",
            seller,
            project,
            "accrual",
            MAX_MINOR,
            "CNY",
            1,
            uuid.uuid4(),
            datetime.now(UTC) + timedelta(days=7),
        )
        for order_id in orders
    ]
    entries.append(entries[0]._replace(event_key="refund:r1", kind="reversal", available_on=None))
    entries[-1] = entries[-1]._replace(entry_id=entry_id(orders[0], "refund:r1"))
    async with db.transaction():
        assert len(await repository.insert_entries(db, entries, datetime.now(UTC))) == ENTRIES + 1

    response = await http.get(
        f"{donations.url}/v1/sellers/{seller}/donations",
        params={"limit": "1"},
        headers=bearer("seller", seller),
    )
    assert response.status_code == 200, response.text
    body = json.loads(response.text)
    assert body["totals"] == [{"currency": "CNY", "net_minor": (ENTRIES - 1) * MAX_MINOR}]
    assert ENTRIES * MAX_MINOR > 2**63
