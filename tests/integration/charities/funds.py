"""Helpers of the funds tests: v1.1 ledger events (entries of every kind, postings) as
the donations service publishes them, and a project with posted money."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from shared.kafka import Producer
from tests.conftest import unique
from tests.integration.charities.helpers import new_project
from tests.support import eventually

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def recorded(
    project_id: str,
    order_id: str,
    amount_minor: int,
    *,
    kind: str = "accrual",
    recorded_at: datetime = T0,
    campaign_id: str | None = None,
    currency: str = "CNY",
) -> dict[str, Any]:
    """A ``donation.recorded`` event as the donations service publishes it (v1.1)."""
    entry: dict[str, Any] = {
        "entry_id": str(uuid.uuid4()),
        "order_id": order_id,
        "seller_id": "seller-d",
        "project_id": project_id,
        "kind": kind,
        "amount_minor": amount_minor,
        "currency": currency,
        "rule_version": None if kind.startswith("match") else 1,
        "recorded_at": recorded_at.isoformat(),
        "campaign_id": campaign_id,
    }
    if kind == "accrual":
        entry["available_on"] = (recorded_at + timedelta(days=7)).isoformat()
    return _envelope("donation.recorded", {"entry": entry})


def posted(
    project_id: str, order_id: str, posted_minor: int, posted_at: datetime
) -> dict[str, Any]:
    return _envelope(
        "donation.posted",
        {
            "order_id": order_id,
            "seller_id": "seller-d",
            "project_id": project_id,
            "currency": "CNY",
            "posted_minor": posted_minor,
            "posted_at": posted_at.isoformat(),
        },
    )


def _envelope(type_: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        **body,
    }


async def send(producer: Producer, topic: str, events: list[dict[str, Any]]) -> None:
    """Keyed by order id, like the donations service (one partition per order, in order)."""
    futures = []
    for event in events:
        order_id = event["entry"]["order_id"] if "entry" in event else event["order_id"]
        futures.append(await producer.send(topic, orjson.dumps(event), key=order_id.encode()))
    await asyncio.gather(*futures)


async def totals(client: httpx.AsyncClient, project_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/projects/{project_id}/totals")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def disbursement(amount_minor: int, **fields: Any) -> dict[str, Any]:
    return {
        "disbursement_id": str(uuid.uuid4()),
        "amount_minor": amount_minor,
        "recipient": "Village school",
        "purpose": "books",
        **fields,
    }


async def funded_project(
    client: httpx.AsyncClient, producer: Producer, topic: str, amounts: list[int]
) -> tuple[str, str, list[str]]:
    """(charity_id, project_id, order ids): one posted order per amount, posted in order."""
    charity_id, project_id = await new_project(client)
    orders = [unique("order") for _ in amounts]
    events = [recorded(project_id, o, a) for o, a in zip(orders, amounts, strict=True)]
    events += [
        posted(project_id, o, a, T0 + timedelta(days=8, minutes=n))
        for n, (o, a) in enumerate(zip(orders, amounts, strict=True))
    ]
    await send(producer, topic, events)
    await eventually(
        lambda: totals(client, project_id), lambda b: b["posted_minor"] == sum(amounts)
    )
    return charity_id, project_id, orders
