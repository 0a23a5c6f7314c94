"""Order events on Kafka → ledger entries, through the running donations consumer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.auth import Role
from shared.events import (
    DLQ_SUFFIX,
    OrderCancelled,
    OrderCompleted,
    OrderItem,
    OrderRefunded,
    OrderSnapshot,
    encode,
    to_json_dict,
)
from shared.kafka import Producer
from tests.conftest import bearer, unique
from tests.integration.donations.conftest import (
    Donations,
    create_project,
    orders_topic,
    publish,
    put_rule,
)
from tests.support import eventually


def completed(
    order_id: str,
    seller_id: str,
    total_minor: int,
    *,
    currency: str = "CNY",
    placed_at: datetime | None = None,
) -> OrderCompleted:
    placed = placed_at or datetime.now(UTC)
    return OrderCompleted(
        order=OrderSnapshot(
            order_id=order_id,
            seller_id=seller_id,
            currency=currency,
            total_minor=total_minor,
            items=[OrderItem(item_id="tea", quantity=1, unit_price_minor=total_minor)],
            placed_at=placed,
            completed_at=placed + timedelta(seconds=1),
        )
    )


def refunded(
    order: OrderCompleted, refund_id: str, amount_minor: int, refunded_total_minor: int
) -> OrderRefunded:
    return OrderRefunded(
        order_id=order.order.order_id,
        seller_id=order.order.seller_id,
        refund_id=refund_id,
        amount_minor=amount_minor,
        refunded_total_minor=refunded_total_minor,
        total_minor=order.order.total_minor,
        currency=order.order.currency,
        placed_at=order.order.placed_at,
    )


async def receipt(http: httpx.AsyncClient, donations: Donations, order_id: str) -> httpx.Response:
    return await http.get(f"{donations.url}/v1/orders/{order_id}/donation")


async def wait_net(
    http: httpx.AsyncClient, donations: Donations, order_id: str, net_minor: int
) -> dict[str, Any]:
    async def probe() -> httpx.Response:
        return await receipt(http, donations, order_id)

    response = await eventually(
        probe, lambda r: r.status_code == 200 and r.json()["net_minor"] == net_minor
    )
    body: dict[str, Any] = response.json()
    return body


async def test_fixed_accrual_and_full_refund(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    rule = await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=2)
    order = completed(unique("order"), seller, 2500)
    topic = orders_topic(donations)
    await publish(order_producer, topic, order)
    body = await wait_net(http, donations, order.order.order_id, 2)
    assert body["seller_id"] == seller
    assert body["project_id"] == project
    assert body["currency"] == "CNY"
    [accrual] = body["entries"]
    assert (accrual["kind"], accrual["amount_minor"], accrual["rule_version"]) == (
        "accrual",
        2,
        rule["version"],
    )

    # a partial refund reverses nothing under a fixed rule; the full refund reverses it all
    await publish(order_producer, topic, refunded(order, "r1", 1000, 1000))
    await publish(order_producer, topic, refunded(order, "r2", 1500, 2500))
    body = await wait_net(http, donations, order.order.order_id, 0)
    assert [(e["kind"], e["amount_minor"]) for e in body["entries"]] == [
        ("accrual", 2),
        ("reversal", 2),
    ]


async def test_percent_accrual_and_partial_refunds(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(
        http, donations, seller, project_id=project, mode="percent", basis_points=150, max_minor=90
    )
    topic = orders_topic(donations)
    small = completed(unique("order"), seller, 1_001)  # 1.5 % = 15.015 -> 15
    big = completed(unique("order"), seller, 100_000)  # 1500, capped at 90
    await publish(order_producer, topic, small, big)
    assert (await wait_net(http, donations, small.order.order_id, 15))["entries"][0][
        "amount_minor"
    ] == 15
    await wait_net(http, donations, big.order.order_id, 90)

    # refund 300 of 1001: net becomes 1.5 % of 701 = 10.515 -> 11, so 4 is reversed
    await publish(order_producer, topic, refunded(small, "r1", 300, 300))
    body = await wait_net(http, donations, small.order.order_id, 11)
    assert body["entries"][-1]["kind"] == "reversal"
    assert body["entries"][-1]["amount_minor"] == 4
    # the big order stays at the cap until less than 6000 remains
    await publish(order_producer, topic, refunded(big, "r1", 50_000, 50_000))
    await publish(order_producer, topic, refunded(big, "r2", 46_000, 96_000))  # 4000 left -> 60
    body = await wait_net(http, donations, big.order.order_id, 60)
    assert [(e["kind"], e["amount_minor"]) for e in body["entries"]] == [
        ("accrual", 90),
        ("reversal", 30),
    ]
    await publish(order_producer, topic, refunded(small, "r2", 701, 1001))
    await wait_net(http, donations, small.order.order_id, 0)

    statement = await http.get(
        f"{donations.url}/v1/sellers/{seller}/donations",
        params={"limit": 3},
        headers=bearer(Role.SELLER, seller),
    )
    assert statement.status_code == 200, statement.text
    page = statement.json()
    assert page["totals"] == [{"currency": "CNY", "net_minor": 60}]
    assert len(page["items"]) == 3
    assert page["next_cursor"]
    rest = await http.get(
        f"{donations.url}/v1/sellers/{seller}/donations",
        params={"limit": 3, "cursor": page["next_cursor"]},
        headers=bearer(Role.ADMIN),
    )
    items = page["items"] + rest.json()["items"]
    assert rest.json()["next_cursor"] is None
    assert len({i["entry_id"] for i in items}) == len(items) == 5
    assert sum(i["amount_minor"] * (1 if i["kind"] == "accrual" else -1) for i in items) == 60
    assert {i["seller_id"] for i in items} == {seller}


async def test_the_rule_in_effect_when_the_order_was_placed_applies(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    v1 = await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=3)
    v2 = await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=7)
    t1 = datetime.fromisoformat(v1["effective_from"])
    t2 = datetime.fromisoformat(v2["effective_from"])
    assert t1 < t2
    under_v1 = completed(unique("order"), seller, 1000, placed_at=t1 + (t2 - t1) / 2)
    under_v2 = completed(unique("order"), seller, 1000, placed_at=t2)
    before_any = completed(unique("order"), seller, 1000, placed_at=t1 - timedelta(seconds=1))
    # all on one key (so one partition, in order): the last one tells the others are done
    for event in (before_any, under_v1, under_v2):
        await order_producer.send_and_wait(
            orders_topic(donations), encode(event), key=seller.encode()
        )
    body = await wait_net(http, donations, under_v1.order.order_id, 3)
    assert body["entries"][0]["rule_version"] == 1
    body = await wait_net(http, donations, under_v2.order.order_id, 7)
    assert body["entries"][0]["rule_version"] == 2
    assert (await receipt(http, donations, before_any.order.order_id)).status_code == 404


async def test_orders_without_a_donation_record_nothing(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller, paused_seller = unique("seller"), unique("seller")
    project = await create_project(http, donations.charities_url, "CNY")
    await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=2)
    await put_rule(
        http,
        donations,
        paused_seller,
        project_id=project,
        mode="fixed",
        amount_minor=2,
        active=False,
    )
    other_currency = completed(unique("order"), seller, 1000, currency="USD")
    paused = completed(unique("order"), paused_seller, 1000)
    no_rule = completed(unique("order"), unique("seller"), 1000)
    cancelled = OrderCancelled(order_id=unique("order"), seller_id=seller)
    sentinel = completed(unique("order"), seller, 1000)
    unknown_type = {
        "event_id": "6f1c1f9e-1c0e-4c55-9b63-0e7b4f0f9a11",
        "type": "order.gift_wrapped",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    key = unique("key").encode()
    topic = orders_topic(donations)
    for event in (other_currency, paused, no_rule, cancelled):
        await order_producer.send_and_wait(topic, encode(event), key=key)
    await order_producer.send_and_wait(topic, orjson.dumps(unknown_type), key=key)
    await order_producer.send_and_wait(topic, encode(sentinel), key=key)
    await wait_net(http, donations, sentinel.order.order_id, 2)
    for event in (other_currency, paused, no_rule):
        assert (await receipt(http, donations, event.order.order_id)).status_code == 404
    metrics = (await http.get(f"{donations.url}/metrics")).text
    assert 'gfg_donations_events_total{outcome="currency_mismatch",type="order.completed"}' in (
        metrics
    )
    assert 'gfg_donations_events_total{outcome="skipped",type="order.gift_wrapped"}' in metrics
    assert "gfg_donations_currency_mismatch_total" in metrics


async def test_redelivered_events_record_nothing_twice(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(http, donations, seller, project_id=project, mode="percent", basis_points=1000)
    order = completed(unique("order"), seller, 5000)
    refund = refunded(order, "r1", 1000, 1000)
    topic = orders_topic(donations)
    await publish(order_producer, topic, order, refund, order, refund, order)
    await publish(order_producer, topic, refunded(order, "r2", 4000, 5000))
    body = await wait_net(http, donations, order.order.order_id, 0)
    assert [(e["kind"], e["amount_minor"]) for e in body["entries"]] == [
        ("accrual", 500),
        ("reversal", 100),
        ("reversal", 400),
    ]


async def test_a_poison_message_goes_to_the_dlq_and_the_partition_moves_on(
    http: httpx.AsyncClient, donations: Donations, order_producer: Producer
) -> None:
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(http, donations, seller, project_id=project, mode="fixed", amount_minor=5)
    topic = orders_topic(donations)
    dlq = topic + DLQ_SUFFIX
    reader = AIOKafkaConsumer(bootstrap_servers=donations.settings.kafka_bootstrap)
    await reader.start()
    try:
        assert dlq in await reader.topics()
        # ensure_topics created it with the configured partition count
        partitions = [TopicPartition(dlq, p) for p in range(donations.settings.topic_partitions)]
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        for tp, offset in ends.items():
            reader.seek(tp, offset)

        key = unique("order")
        after = completed(key, seller, 100)
        invalid = to_json_dict(completed(unique("order"), seller, 100))
        invalid["order"]["total_minor"] = -5
        await order_producer.send_and_wait(topic, b"{not json", key=key.encode())
        await order_producer.send_and_wait(topic, orjson.dumps(invalid), key=key.encode())
        await order_producer.send_and_wait(topic, encode(after), key=key.encode())
        await wait_net(http, donations, key, 5)

        letters: list[dict[str, Any]] = []

        async def read_dlq() -> list[dict[str, Any]]:
            batches = await reader.getmany(timeout_ms=500)
            for records in batches.values():
                letters.extend(orjson.loads(r.value) for r in records if r.key == key.encode())
            return letters

        await eventually(read_dlq, lambda found: len(found) >= 2)
    finally:
        await reader.stop()
    assert letters[0]["value"] == "{not json"
    assert "not an event" in letters[0]["reason"]
    assert "invalid order.completed" in letters[1]["reason"]
    assert (letters[0]["topic"], letters[0]["key"]) == (topic, key)
