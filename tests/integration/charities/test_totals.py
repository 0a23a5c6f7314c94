"""Totals folded from the ledger topic: exact sums, redeliveries, reversals, sellers,
daily buckets, ETags, and poison messages."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.charities.config import Settings
from services.charities.consumer import EVENTS_SKIPPED
from shared.kafka import Producer
from tests.conftest import bearer
from tests.integration.charities.helpers import ledger_entry, new_project, produce
from tests.support import eventually


async def _totals(client: httpx.AsyncClient, project_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/projects/{project_id}/totals")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_project_without_entries_has_zero_totals(client: httpx.AsyncClient) -> None:
    _, project_id = await new_project(client, currency="JPY")
    body = await _totals(client, project_id)
    assert body["project_id"] == project_id
    assert body["currency"] == "JPY"
    for field in ("donated_minor", "reversed_minor", "net_minor", "donation_count", "seller_count"):
        assert body[field] == 0
    assert body["last_donation_at"] is None
    assert body["as_of"]
    assert (await client.get(f"/v1/projects/{uuid.uuid4()}/totals")).status_code == 404


async def test_totals_are_the_exact_sum_of_the_ledger(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    charity_id, project_id = await new_project(client, goal_minor=10_000)
    _, other_project = await new_project(client)
    events = [
        ledger_entry(project_id, 2, seller_id=f"seller-{n % 7}", order_id=f"order-{n}")
        for n in range(300)
    ]
    events += [ledger_entry(project_id, 1234, seller_id="seller-big")]
    # reversals for two of the orders (same key: same partition, after their accrual)
    events += [
        ledger_entry(project_id, 2, seller_id="seller-1", kind="reversal", order_id="order-1"),
        ledger_entry(project_id, 1, seller_id="seller-2", kind="reversal", order_id="order-2"),
    ]
    events += [ledger_entry(other_project, 5, seller_id="seller-1")]
    await produce(ledger_producer, ledger_topic, events)
    # redelivery: the same entries again (as a relay retry would publish them)
    await produce(ledger_producer, ledger_topic, events[:50] + events[-3:])

    expected = {
        "project_id": project_id,
        "currency": "CNY",
        "donated_minor": 300 * 2 + 1234,
        "reversed_minor": 3,
        "net_minor": 300 * 2 + 1234 - 3,
        "donation_count": 301,
        "seller_count": 8,
    }
    body = await eventually(
        lambda: _totals(client, project_id),
        lambda b: b["donation_count"] >= 301 and b["reversed_minor"] >= 3,
    )
    # a second round of redeliveries must change nothing
    await produce(ledger_producer, ledger_topic, events)
    marker = ledger_entry(project_id, 7, seller_id="seller-0")
    await produce(ledger_producer, ledger_topic, [marker])
    body = await eventually(
        lambda: _totals(client, project_id), lambda b: b["donation_count"] >= 302
    )
    expected.update(donated_minor=300 * 2 + 1234 + 7, net_minor=300 * 2 + 1234 + 7 - 3)
    expected["donation_count"] = 302
    assert {k: body[k] for k in expected} == expected
    assert body["last_donation_at"] is not None

    other = await _totals(client, other_project)
    assert (other["donated_minor"], other["donation_count"], other["seller_count"]) == (5, 1, 1)

    charity = await client.get(f"/v1/charities/{charity_id}/totals")
    assert charity.status_code == 200
    items = charity.json()["items"]
    assert len(items) == 1
    assert items[0]["currency"] == "CNY"
    assert items[0]["net_minor"] == expected["net_minor"]
    assert items[0]["seller_count"] == 8

    everything = (await client.get("/v1/totals")).json()["items"]
    mine = [i for i in everything if i["project_id"] == project_id]
    assert len(mine) == 1
    assert mine[0]["net_minor"] == expected["net_minor"]
    assert mine[0]["goal_minor"] == 10_000
    assert mine[0]["charity_id"] == charity_id
    assert mine[0]["status"] == "active"
    assert mine[0]["name"]
    assert mine[0]["charity_name"]


async def test_charity_totals_count_a_seller_once_across_projects(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    charity_id, first = await new_project(client)
    admin = bearer("admin")
    second = (
        await client.post(
            f"/v1/charities/{charity_id}/projects",
            json={"name": "second", "currency": "CNY"},
            headers=admin,
        )
    ).json()["project_id"]
    third = (
        await client.post(
            f"/v1/charities/{charity_id}/projects",
            json={"name": "third", "currency": "USD"},
            headers=admin,
        )
    ).json()["project_id"]
    await produce(
        ledger_producer,
        ledger_topic,
        [
            ledger_entry(first, 10, seller_id="a"),
            ledger_entry(second, 20, seller_id="a"),
            ledger_entry(second, 30, seller_id="b"),
            ledger_entry(third, 40, seller_id="a", currency="USD"),
        ],
    )

    async def probe() -> dict[str, Any]:
        body: dict[str, Any] = (await client.get(f"/v1/charities/{charity_id}/totals")).json()
        return body

    body = await eventually(probe, lambda b: sum(i["donation_count"] for i in b["items"]) >= 4)
    by_currency = {i["currency"]: i for i in body["items"]}
    assert by_currency["CNY"]["donated_minor"] == 60
    assert by_currency["CNY"]["seller_count"] == 2
    assert by_currency["CNY"]["donation_count"] == 3
    assert by_currency["USD"]["donated_minor"] == 40
    assert by_currency["USD"]["seller_count"] == 1
    assert (await client.get(f"/v1/charities/{uuid.uuid4()}/totals")).status_code == 404


async def test_daily_buckets_split_at_utc_midnight(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    _, project_id = await new_project(client)
    before = datetime(2031, 3, 9, 23, 59, 59, 999_000, tzinfo=UTC)
    after = datetime(2031, 3, 10, 0, 0, 0, tzinfo=UTC)
    # 07:30 at UTC+08:00 on the 10th is still the 9th in UTC
    shanghai = datetime.fromisoformat("2031-03-10T07:30:00+08:00")
    await produce(
        ledger_producer,
        ledger_topic,
        [
            ledger_entry(project_id, 100, recorded_at=before),
            ledger_entry(project_id, 5, recorded_at=shanghai),
            ledger_entry(project_id, 200, recorded_at=after),
            ledger_entry(project_id, 50, recorded_at=after, kind="reversal"),
        ],
    )

    async def probe() -> list[dict[str, Any]]:
        response = await client.get(
            f"/v1/projects/{project_id}/totals/daily",
            params={"from": "2031-03-08", "to": "2031-03-11"},
        )
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()
        return body

    days = await eventually(probe, lambda d: sum(x["donation_count"] for x in d) >= 3)
    assert days == [
        {
            "date": "2031-03-09",
            "donated_minor": 105,
            "reversed_minor": 0,
            "matched_minor": 0,
            "donation_count": 2,
        },
        {
            "date": "2031-03-10",
            "donated_minor": 200,
            "reversed_minor": 50,
            "matched_minor": 0,
            "donation_count": 1,
        },
    ]
    one_day = await client.get(
        f"/v1/projects/{project_id}/totals/daily", params={"from": "2031-03-10", "to": "2031-03-10"}
    )
    assert [d["date"] for d in one_day.json()] == ["2031-03-10"]
    backwards = await client.get(
        f"/v1/projects/{project_id}/totals/daily", params={"from": "2031-03-10", "to": "2031-03-09"}
    )
    assert backwards.status_code == 422
    bad = await client.get(f"/v1/projects/{project_id}/totals/daily", params={"from": "10/03/2031"})
    assert bad.status_code == 422


async def test_etag_gives_304_until_the_total_changes(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    charity_id, project_id = await new_project(client)
    await produce(ledger_producer, ledger_topic, [ledger_entry(project_id, 3)])
    await eventually(lambda: _totals(client, project_id), lambda b: b["donation_count"] == 1)

    urls = [
        f"/v1/projects/{project_id}/totals",
        f"/v1/charities/{charity_id}/totals",
        "/v1/totals",
        f"/v1/projects/{project_id}/totals/daily",
    ]
    tags = {}
    for url in urls:
        first = await client.get(url)
        assert first.status_code == 200
        etag = first.headers["etag"]
        assert etag.startswith('"'), "a strong ETag"
        assert etag.endswith('"')
        assert "max-age" in first.headers["cache-control"]
        again = await client.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304, url
        assert again.content == b""
        assert again.headers["etag"] == etag
        tags[url] = etag

    await produce(ledger_producer, ledger_topic, [ledger_entry(project_id, 4)])
    for url in urls:
        changed = await eventually(
            _conditional_get(client, url, tags[url]), lambda r: r.status_code != 304
        )
        assert changed.status_code == 200, url
        assert changed.headers["etag"] != tags[url]
        stable = await client.get(url, headers={"If-None-Match": changed.headers["etag"]})
        assert stable.status_code == 304
    assert (await _totals(client, project_id))["net_minor"] == 7


def _conditional_get(
    client: httpx.AsyncClient, url: str, etag: str
) -> Callable[[], Awaitable[httpx.Response]]:
    async def probe() -> httpx.Response:
        return await client.get(url, headers={"If-None-Match": etag})

    return probe


async def test_entries_for_unregistered_projects_are_totalled(
    client: httpx.AsyncClient, ledger_producer: Producer, ledger_topic: str
) -> None:
    project_id = str(uuid.uuid4())
    await produce(ledger_producer, ledger_topic, [ledger_entry(project_id, 9, currency="USD")])
    body = await eventually(
        lambda: client.get(f"/v1/projects/{project_id}/totals"), lambda r: r.status_code == 200
    )
    assert body.json()["currency"] == "USD"
    assert body.json()["net_minor"] == 9
    listed = [
        i for i in (await client.get("/v1/totals")).json()["items"] if i["project_id"] == project_id
    ]
    assert listed[0]["name"] is None
    assert listed[0]["net_minor"] == 9


async def test_poison_goes_to_the_dlq_and_the_rest_is_folded(
    client: httpx.AsyncClient,
    ledger_producer: Producer,
    ledger_topic: str,
    charities_settings: Settings,
) -> None:
    _, project_id = await new_project(client)
    poison_key = f"poison-{uuid.uuid4().hex}".encode()
    skipped_before = EVENTS_SKIPPED._value.get()
    # every message with the project's key space: poison first, then valid ones behind it
    bad = [
        await ledger_producer.send(ledger_topic, b"{not json", key=poison_key),
        await ledger_producer.send(
            ledger_topic,
            orjson.dumps(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "donation.recorded",
                    "occurred_at": "2031-01-01T00:00:00Z",
                    "entry": {"entry_id": "nope"},
                }
            ),
            key=poison_key,
        ),
        await ledger_producer.send(
            ledger_topic,
            orjson.dumps(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "donation.retracted.v9",
                    "occurred_at": "2031-01-01T00:00:00Z",
                }
            ),
            key=poison_key,
        ),
    ]
    for future in bad:
        await future
    good = [ledger_entry(project_id, 11, order_id=poison_key.decode()) for _ in range(3)]
    await produce(ledger_producer, ledger_topic, good)
    body = await eventually(lambda: _totals(client, project_id), lambda b: b["donation_count"] == 3)
    assert body["net_minor"] == 33
    assert EVENTS_SKIPPED._value.get() >= skipped_before + 1

    dead = await _dead_letters(charities_settings, ledger_topic + ".dlq", poison_key)
    assert len(dead) == 2, dead
    assert {d["value"] for d in dead} >= {"{not json"}
    assert all(d["reason"] for d in dead)
    assert all(d["topic"] == ledger_topic for d in dead)


async def _dead_letters(settings: Settings, dlq: str, key: bytes) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(dlq, p) for p in consumer.partitions_for_topic(dlq) or []]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(dlq, p) for p in consumer.partitions_for_topic(dlq) or []]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[dict[str, Any]] = []

        async def read() -> list[dict[str, Any]]:
            batches = await consumer.getmany(*partitions, timeout_ms=200, max_records=5000)
            for records in batches.values():
                found.extend(orjson.loads(r.value) for r in records if r.key == key)
            return found

        await eventually(read, lambda f: len(f) >= 2)
        # then read to the current end, so that a third dead letter would be seen too
        end = await consumer.end_offsets(partitions)
        for tp in partitions:
            while await consumer.position(tp) < end[tp]:
                await read()
        return found
    finally:
        await consumer.stop()
