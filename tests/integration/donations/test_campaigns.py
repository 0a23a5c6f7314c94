"""Sponsor matching campaigns: the API, and matches made by the consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from services.donations.consumer import LedgerHandler
from shared.auth import Role
from shared.db import Pool, create_pool
from shared.events import TOPIC_LEDGER, DonationRecorded, decode, encode
from shared.kafka import Producer
from tests.conftest import bearer, unique
from tests.integration.donations.conftest import (
    Donations,
    create_project,
    orders_topic,
    publish,
    put_rule,
)
from tests.integration.donations.test_consumer import receipt, refunded, wait_net
from tests.integration.donations.test_items import order_with
from tests.support import eventually


def campaign_body(project_id: str, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "campaign_id": unique("camp"),
        "sponsor": "Sponsor Co",
        "project_id": project_id,
        "ratio_bp": 10_000,
        "budget_minor": 1_000,
        "starts_at": (now - timedelta(hours=1)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
    }
    body.update(overrides)
    return body


async def post_campaign(
    http: httpx.AsyncClient, donations: Donations, body: dict[str, Any]
) -> httpx.Response:
    return await http.post(f"{donations.url}/v1/campaigns", json=body, headers=bearer(Role.ADMIN))


async def get_campaign(
    http: httpx.AsyncClient, donations: Donations, campaign_id: str
) -> dict[str, Any]:
    response = await http.get(f"{donations.url}/v1/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def pool(donations: Donations) -> AsyncIterator[Pool]:
    settings = donations.settings
    created = await create_pool(settings.dsn(settings.donations_db), min_size=1, max_size=2)
    try:
        yield created
    finally:
        await created.close()


def record(value: bytes, offset: int) -> ConsumerRecord:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value),
        headers=(),
    )


async def test_create_is_idempotent_and_another_body_conflicts(
    http: httpx.AsyncClient, donations: Donations
) -> None:
    project = await create_project(http, donations.charities_url, "HKD")
    body = campaign_body(project, per_item_minor=5, per_order_cap_minor=300, sellers=["s1", "s2"])
    created = await post_campaign(http, donations, body)
    assert created.status_code == 201, created.text
    out = created.json()
    assert out == {
        **body,
        "starts_at": out["starts_at"],
        "ends_at": out["ends_at"],
        "currency": "HKD",
        "matched_minor": 0,
        "remaining_minor": 1_000,
        "status": "active",
        "closed_at": None,
    }
    again = await post_campaign(http, donations, body)
    assert (again.status_code, again.json()) == (200, out)
    other = await post_campaign(http, donations, {**body, "budget_minor": 2_000})
    assert other.status_code == 409, other.text
    assert other.headers["content-type"].startswith("application/problem+json")

    assert await get_campaign(http, donations, body["campaign_id"]) == out
    listed = await http.get(f"{donations.url}/v1/campaigns", params={"project_id": project})
    assert [c["campaign_id"] for c in listed.json()["items"]] == [body["campaign_id"]]
    missing = await http.get(f"{donations.url}/v1/campaigns/{unique('nope')}")
    assert missing.status_code == 404
    seller = await http.post(
        f"{donations.url}/v1/campaigns", json=body, headers=bearer(Role.SELLER, "s1")
    )
    assert seller.status_code == 403

    scheduled = campaign_body(
        project,
        starts_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        ratio_bp=0,
        per_item_minor=1,
    )
    assert (await post_campaign(http, donations, scheduled)).json()["status"] == "scheduled"
    page = await http.get(
        f"{donations.url}/v1/campaigns", params={"project_id": project, "limit": 1}
    )
    assert len(page.json()["items"]) == 1
    assert page.json()["next_cursor"]
    rest = await http.get(
        f"{donations.url}/v1/campaigns",
        params={"project_id": project, "limit": 1, "cursor": page.json()["next_cursor"]},
    )
    assert {page.json()["items"][0]["campaign_id"], rest.json()["items"][0]["campaign_id"]} == {
        body["campaign_id"],
        scheduled["campaign_id"],
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ratio_bp": 0}, "ratio_bp"),
        (
            {"ends_at": "2025-01-01T00:00:00+00:00", "starts_at": "2025-01-02T00:00:00+00:00"},
            "ends_at",
        ),
        (
            {"ends_at": "2025-01-01T00:00:00+00:00", "starts_at": "2024-01-01T00:00:00+00:00"},
            "ends_at",
        ),
        ({"ends_at": "2099-01-01T00:00:00"}, "ends_at"),
        ({"budget_minor": 0}, "budget_minor"),
        ({"sellers": []}, "sellers"),
        ({"project_id": "00000000-0000-4000-8000-00000000dead"}, "project_id"),
        ({"closed": True}, "project_id"),
    ],
)
async def test_invalid_campaigns_are_422(
    http: httpx.AsyncClient, donations: Donations, overrides: dict[str, Any], field: str
) -> None:
    overrides = dict(overrides)
    closed = bool(overrides.pop("closed", False))
    project = await create_project(http, donations.charities_url, closed=closed)
    body = {**campaign_body(project), **overrides}
    response = await post_campaign(http, donations, body)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}
    missing = await http.get(f"{donations.url}/v1/campaigns/{body['campaign_id']}")
    assert missing.status_code == 404


async def ledger_events(donations: Donations, order_id: str, count: int) -> list[DonationRecorded]:
    """The donation.recorded events of ``order_id`` on the ledger topic (waits for ``count``)."""
    consumer = AIOKafkaConsumer(
        donations.settings.topic(TOPIC_LEDGER),
        bootstrap_servers=donations.settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[DonationRecorded] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for part in batches.values():
                    for r in part:
                        if order_id.encode() in r.value:
                            found.append(decode(r.value, DonationRecorded))
    finally:
        await consumer.stop()
    return found


async def matched_seller(
    http: httpx.AsyncClient, donations: Donations, pool: Pool, *, budget_minor: int
) -> tuple[str, str, LedgerHandler]:
    """A new seller giving 100 fen per order to a new project, a campaign matching it with
    ``budget_minor``, and a ledger handler: (seller, campaign id, handler)."""
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=100)
    body = campaign_body(project, budget_minor=budget_minor)
    assert (await post_campaign(http, donations, body)).status_code == 201
    return (
        seller,
        str(body["campaign_id"]),
        LedgerHandler(pool, donations.settings.topic(TOPIC_LEDGER)),
    )


async def test_budget_runs_out_mid_batch_and_a_reversal_gives_it_back(
    http: httpx.AsyncClient, donations: Donations, pool: Pool
) -> None:
    seller, campaign_id, handler = await matched_seller(http, donations, pool, budget_minor=250)
    orders = [order_with(seller, 1_000, [("tea", 1)]) for _ in range(5)]
    # one batch: matches 100, 100, then 50 (partial), then nothing
    dead = await handler.handle([record(encode(o), n) for n, o in enumerate(orders)])
    assert dead == []
    matched = []
    for order in orders:
        r = (await receipt(http, donations, order.order.order_id)).json()
        assert r["net_minor"] == 100
        matched.append(r["matched_minor"])
    assert matched == [100, 100, 50, 0, 0]
    first = (await receipt(http, donations, orders[0].order.order_id)).json()
    assert [
        (e["kind"], e["amount_minor"], e["campaign_id"], e["rule_version"])
        for e in first["entries"]
    ] == [
        ("accrual", 100, None, 1),
        ("match", 100, campaign_id, None),
    ]
    campaign = await get_campaign(http, donations, campaign_id)
    assert (campaign["matched_minor"], campaign["remaining_minor"], campaign["status"]) == (
        250,
        0,
        "exhausted",
    )
    # the same batch again (a redelivery) matches nothing more
    await handler.handle([record(encode(o), n) for n, o in enumerate(orders)])
    assert (await get_campaign(http, donations, campaign_id))["matched_minor"] == 250

    # a full refund of the first order reverses its match: budget back, active again
    full = refunded(orders[0], "r1", 1_000, 1_000)
    await handler.handle([record(encode(full), 10)])
    r = (await receipt(http, donations, orders[0].order.order_id)).json()
    assert (r["net_minor"], r["matched_minor"]) == (0, 0)
    assert [(e["kind"], e["amount_minor"]) for e in r["entries"]][2:] == [
        ("reversal", 100),
        ("match_reversal", 100),
    ]
    campaign = await get_campaign(http, donations, campaign_id)
    assert (campaign["matched_minor"], campaign["status"]) == (150, "active")

    events = await ledger_events(donations, orders[0].order.order_id, 4)
    kinds = {(e.entry.kind, e.entry.campaign_id, e.entry.rule_version) for e in events}
    assert kinds == {
        ("accrual", None, 1),
        ("match", campaign_id, None),
        ("reversal", None, 1),
        ("match_reversal", campaign_id, None),
    }
    raw = orjson.loads(encode(events[0]))
    assert "campaign_id" in raw["entry"]


async def test_two_campaigns_window_sellers_and_close(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller, other_seller = unique("seller"), unique("seller")
    project = await create_project(http, donations.charities_url)
    for s in (seller, other_seller):
        await put_rule(http, donations, s, project_id=project, mode="fixed", amount_minor=101)
    # placed_at in the near future: after the rules took effect, inside the windows
    now = datetime.now(UTC)
    ratio = campaign_body(
        project,
        campaign_id=unique("z-ratio"),
        ratio_bp=5_000,
        starts_at=(now + timedelta(minutes=1)).isoformat(),
    )
    items = campaign_body(
        project,
        campaign_id=unique("a-items"),
        ratio_bp=0,
        per_item_minor=3,
        per_order_cap_minor=10,
        sellers=[seller],
        starts_at=(now + timedelta(minutes=2)).isoformat(),
    )
    for body in (ratio, items):
        assert (await post_campaign(http, donations, body)).status_code == 201
    topic = orders_topic(donations)
    inside = now + timedelta(minutes=3)
    both = order_with(seller, 1_000, [("tea", 2), ("cup", 1)], placed_at=inside)  # 51 + 9
    capped = order_with(seller, 1_000, [("tea", 7)], placed_at=inside)  # 51 + 10 (cap)
    ratio_only = order_with(other_seller, 1_000, [("tea", 2)], placed_at=inside)  # not listed
    early = order_with(seller, 1_000, [("tea", 2)], placed_at=now + timedelta(seconds=90))
    before = order_with(seller, 1_000, [("tea", 2)], placed_at=now + timedelta(seconds=30))
    await publish(order_producer, topic, both, capped, ratio_only, early, before)

    async def matched_of(order_id: str, net: int) -> list[tuple[str, int]]:
        r = await wait_net(http, donations, order_id, net)
        return [(e["campaign_id"], e["amount_minor"]) for e in r["entries"] if e["kind"] == "match"]

    # (starts_at, campaign_id) order: the ratio campaign started first
    assert await matched_of(both.order.order_id, 101) == [
        (ratio["campaign_id"], 51),
        (items["campaign_id"], 9),
    ]
    assert await matched_of(capped.order.order_id, 101) == [
        (ratio["campaign_id"], 51),
        (items["campaign_id"], 10),
    ]
    assert await matched_of(ratio_only.order.order_id, 101) == [(ratio["campaign_id"], 51)]
    assert await matched_of(early.order.order_id, 101) == [(ratio["campaign_id"], 51)]
    assert await matched_of(before.order.order_id, 101) == []

    closed = await http.post(
        f"{donations.url}/v1/campaigns/{ratio['campaign_id']}/close", headers=bearer(Role.ADMIN)
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "ended"
    after = order_with(seller, 1_000, [("tea", 1)], placed_at=inside)
    await publish(order_producer, topic, after)
    assert await matched_of(after.order.order_id, 101) == [(items["campaign_id"], 3)]

    ratio_now = await get_campaign(http, donations, ratio["campaign_id"])
    assert (ratio_now["matched_minor"], ratio_now["status"]) == (4 * 51, "ended")

    async def items_matched() -> int:
        return int((await get_campaign(http, donations, items["campaign_id"]))["matched_minor"])

    await eventually(items_matched, lambda m: m == 9 + 10 + 3)


async def test_a_batch_partly_recorded_before_matches_only_its_new_accruals(
    http: httpx.AsyncClient, donations: Donations, pool: Pool
) -> None:
    """A redelivery that overlaps new events matches (and publishes) only the accruals that
    are new: a match is planned from what the batch really inserted."""
    seller, campaign_id, handler = await matched_seller(http, donations, pool, budget_minor=10_000)
    orders = [order_with(seller, 1_000, [("tea", 1)]) for _ in range(4)]
    assert await handler.handle([record(encode(o), n) for n, o in enumerate(orders[:2])]) == []
    assert handler.entries_recorded == 4
    # the first two again (a redelivery) with two new ones in one batch
    assert await handler.handle([record(encode(o), n) for n, o in enumerate(orders)]) == []
    assert handler.entries_recorded == 8
    for order in orders:
        r = (await receipt(http, donations, order.order.order_id)).json()
        assert [(e["kind"], e["amount_minor"]) for e in r["entries"]] == [
            ("accrual", 100),
            ("match", 100),
        ]
    campaign = await get_campaign(http, donations, campaign_id)
    assert campaign["matched_minor"] == 4 * 100
    events = await ledger_events(donations, orders[3].order.order_id, 2)
    assert sorted(e.entry.kind for e in events) == ["accrual", "match"]
