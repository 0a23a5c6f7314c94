"""Helpers of the charities tests: ledger events onto Kafka, fresh projects, a stand-in
for the donations service's campaigns."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import msgspec
import orjson
from fastapi import FastAPI, Response

from services.charities import repository
from shared.db import Pool
from shared.events import DONATION_RECORDED, DonationRecorded, LedgerEntry, encode
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


def match_entry(
    project_id: str,
    amount_minor: int,
    *,
    campaign_id: str,
    order_id: str,
    kind: Literal["match", "match_reversal"] = "match",
    seller_id: str = "seller-1",
    currency: str = "CNY",
    recorded_at: datetime | None = None,
) -> dict[str, Any]:
    """A sponsor's match (or its reversal) as the donations service publishes it: a
    ``donation.recorded`` entry with a ``campaign_id`` and no rule version."""
    return {
        "event_id": str(uuid.uuid4()),
        "type": DONATION_RECORDED,
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "entry": {
            "entry_id": str(uuid.uuid4()),
            "order_id": order_id,
            "seller_id": seller_id,
            "project_id": project_id,
            "kind": kind,
            "amount_minor": amount_minor,
            "currency": currency,
            "rule_version": None,
            "campaign_id": campaign_id,
            "recorded_at": (recorded_at or datetime.now(UTC)).isoformat(),
        },
    }


async def produce(
    producer: Producer, topic: str, events: Sequence[DonationRecorded | dict[str, Any]]
) -> None:
    """Sends each event keyed by its order id (a dict is sent as it is, for entries the
    shared model does not build)."""
    futures = []
    for event in events:
        if isinstance(event, DonationRecorded):
            value, order_id = encode(event), event.entry.order_id
        else:
            value, order_id = orjson.dumps(event), event["entry"]["order_id"]
        futures.append(await producer.send(topic, value, key=order_id.encode()))
    await asyncio.gather(*futures)


def _instant(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


async def fold_directly(pool: Pool, events: Sequence[DonationRecorded | dict[str, Any]]) -> int:
    """Folds ``events`` into the totals through the repository, without Kafka: for totals
    no test would wait for a producer to reach (amounts above 2^53, say)."""
    entries = [
        msgspec.structs.asdict(e.entry) if isinstance(e, DonationRecorded) else e["entry"]
        for e in events
    ]
    columns = repository.LedgerRows(
        entry_id=[uuid.UUID(str(e["entry_id"])) for e in entries],
        order_id=[e["order_id"] for e in entries],
        project_id=[uuid.UUID(str(e["project_id"])) for e in entries],
        seller_id=[e["seller_id"] for e in entries],
        currency=[e["currency"] for e in entries],
        kind=[e["kind"] for e in entries],
        amount_minor=[e["amount_minor"] for e in entries],
        campaign_id=[e.get("campaign_id") for e in entries],
        recorded_at=[_instant(e["recorded_at"]) for e in entries],
        available_on=[
            None if e.get("available_on") is None else _instant(e["available_on"]) for e in entries
        ],
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


START = datetime(2031, 1, 1, tzinfo=UTC)


def campaign(project_id: str, campaign_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "campaign_id": campaign_id,
        "sponsor": "Sponsor " + campaign_id,
        "project_id": project_id,
        "ratio_bp": 10_000,
        "per_item_minor": None,
        "per_order_cap_minor": 500,
        "budget_minor": 10_000,
        "starts_at": START.isoformat(),
        "ends_at": (START + timedelta(days=30)).isoformat(),
        "sellers": None,
        "currency": "CNY",
        "matched_minor": 2_500,
        "remaining_minor": 7_500,
        "status": "active",
    }
    body.update(fields)
    return body


def donations_stand_in(campaigns: list[dict[str, Any]], answer: dict[str, Any]) -> FastAPI:
    """Serves ``campaigns`` two per page, ignoring any project filter; ``answer["status"]``
    other than 200 makes it fail."""
    app = FastAPI()

    @app.get("/v1/campaigns")
    async def list_campaigns(cursor: int = 0) -> Response:
        if answer["status"] != 200:
            return Response(b"boom", status_code=answer["status"])
        page = campaigns[cursor : cursor + 2]
        more = cursor + 2 < len(campaigns)
        body = {"items": page, "next_cursor": str(cursor + 2) if more else None}
        return Response(orjson.dumps(body), media_type="application/json")

    return app
