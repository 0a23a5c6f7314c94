"""Helpers of the charities tests: ledger events onto Kafka, fresh projects."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Literal

import httpx

from services.charities import repository
from shared.db import Pool
from shared.events import DonationRecorded, LedgerEntry, encode
from shared.kafka import Producer
from tests.conftest import bearer, unique


def ledger_entry(
    project_id: str,
    amount_minor: int,
    *,
    seller_id: str = "seller-1",
    kind: Literal["accrual", "reversal"] = "accrual",
    currency: str = "CNY",
    recorded_at: datetime | None = None,
    order_id: str | None = None,
) -> DonationRecorded:
    return DonationRecorded(
        entry=LedgerEntry(
            entry_id=uuid.uuid4(),
            order_id=order_id or f"o-{uuid.uuid4().hex[:12]}",
            seller_id=seller_id,
            project_id=uuid.UUID(project_id),
            kind=kind,
            amount_minor=amount_minor,
            currency=currency,
            rule_version=1,
            recorded_at=recorded_at or datetime.now(UTC),
        )
    )


async def produce(producer: Producer, topic: str, events: list[DonationRecorded]) -> None:
    futures = [await producer.send(topic, encode(e), key=e.entry.order_id.encode()) for e in events]
    await asyncio.gather(*futures)


async def fold_directly(pool: Pool, events: list[DonationRecorded]) -> int:
    """Folds ``events`` into the totals through the repository, without Kafka: for totals
    no test would wait for a producer to reach (amounts above 2^53, say)."""
    entries = [e.entry for e in events]
    columns = repository.EntryColumns(
        entry_id=[e.entry_id for e in entries],
        project_id=[e.project_id for e in entries],
        seller_id=[e.seller_id for e in entries],
        currency=[e.currency for e in entries],
        is_accrual=[e.kind == "accrual" for e in entries],
        amount_minor=[e.amount_minor for e in entries],
        recorded_at=[e.recorded_at for e in entries],
    )
    async with pool.acquire() as conn:
        return await repository.fold_entries(conn, columns)


async def new_project(
    client: httpx.AsyncClient, *, currency: str = "CNY", goal_minor: int | None = None
) -> tuple[str, str]:
    """(charity_id, project_id) of a fresh charity with one project."""
    admin = bearer("admin")
    charity = await client.post("/v1/charities", json={"name": unique("Charity")}, headers=admin)
    assert charity.status_code == 201, charity.text
    charity_id: str = charity.json()["charity_id"]
    project = await client.post(
        f"/v1/charities/{charity_id}/projects",
        json={"name": unique("Project"), "currency": currency, "goal_minor": goal_minor},
        headers=admin,
    )
    assert project.status_code == 201, project.text
    project_id: str = project.json()["project_id"]
    return charity_id, project_id
