"""The orders outbox on a private three-broker cluster (replication 3, min ISR 2).

One broker down: writes go on. Two down: the brokers refuse acks=all writes
(NotEnoughReplicas, or a timeout while no controller quorum is left), the API still
answers 201 because the order is durable in PostgreSQL, and the outbox keeps the events
until the brokers return; then every one of them is on the topic. Nothing acknowledged
is lost: the events the brokers acknowledged before the outage, when the in-sync set
shrank to one broker, are all still on the topic after it, read back from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    KafkaTimeoutError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    RequestTimedOutError,
)

from shared.kafka import make_producer
from tests.conftest import unique
from tests.integration.orders.conftest import PrivateOrders, new_order, orders_on, storefront
from tests.servers import PrivateKafka, start_private_kafka
from tests.support import eventually

ORDERS = 20
TEST_SECONDS = 300  # each test, outage and recovery included
REFUSED = (
    NotEnoughReplicasError,
    NotEnoughReplicasAfterAppendError,
    KafkaTimeoutError,
    RequestTimedOutError,
    TimeoutError,
)


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[PrivateKafka]:
    async with start_private_kafka(nodes=3) as kafka:
        yield kafka


@pytest.fixture(scope="module")
async def private(cluster: PrivateKafka) -> AsyncIterator[PrivateOrders]:
    async with orders_on(cluster) as orders:
        yield orders


async def place(private: PrivateOrders, count: int) -> list[str]:
    seller = unique("seller")
    order_ids = []
    for _ in range(count):
        order = new_order(seller, status="completed")
        response = await private.http.post("/v1/orders", json=order, headers=storefront(seller))
        assert response.status_code == 201, response.text
        order_ids.append(order["order_id"])
    return order_ids


async def events_from_start(private: PrivateOrders, keys: set[str]) -> set[str]:
    """The event ids keyed by ``keys`` on the orders topic, read from each partition's
    first offset to its end (a fresh consumer, no group: nothing is skipped)."""
    settings = private.settings
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(private.topic, p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: set[str] = set()

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found |= {
                    orjson.loads(r.value)["event_id"]
                    for r in records
                    if r.key is not None and r.key.decode() in keys and r.value is not None
                }
        return found
    finally:
        await consumer.stop()


async def test_topics_are_replicated_three_times(
    cluster: PrivateKafka, private: PrivateOrders
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        (topic,) = await admin.describe_topics([private.topic])
    finally:
        await admin.close()
    assert len(topic["partitions"]) == private.settings.topic_partitions
    for partition in topic["partitions"]:
        assert sorted(partition["replicas"]) == [1, 2, 3]


@pytest.mark.slow
async def test_one_broker_down_writes_go_on(cluster: PrivateKafka, private: PrivateOrders) -> None:
    async with asyncio.timeout(TEST_SECONDS):
        await cluster.stop(3)
        try:
            producer = make_producer(cluster.bootstrap, request_timeout_ms=30_000)
            try:  # acks=all with two of three in sync: accepted
                await producer.send_and_wait(private.topic, b"{}", key=unique("probe").encode())
            finally:
                await producer.stop()
            order_ids = await place(private, ORDERS)
            events = await private.watch.wait_for(set(order_ids), ORDERS, within=90)
            assert {e.key for e in events} == set(order_ids)
            assert await eventually(lambda: private.pending(order_ids), lambda n: n == 0) == 0
        finally:
            await cluster.start(3)


@pytest.mark.slow
async def test_two_brokers_down_the_outbox_keeps_the_events(
    cluster: PrivateKafka, private: PrivateOrders
) -> None:
    watch = private.watch
    async with asyncio.timeout(TEST_SECONDS):
        before_ids = await place(private, ORDERS)  # acknowledged by all three brokers
        before = await watch.wait_for(set(before_ids), ORDERS, within=90)
        assert await eventually(lambda: private.pending(before_ids), lambda n: n == 0) == 0
        acknowledged = {e.value["event_id"] for e in before}
        await cluster.stop(3)
        await cluster.stop(2)
        try:
            order_ids = await place(private, ORDERS)  # 201 each: durable in PostgreSQL
            # Not idempotent: with the controller quorum gone no new producer id is handed
            # out, so an idempotent probe would wait for one instead of trying to write.
            producer = make_producer(
                cluster.bootstrap, enable_idempotence=False, request_timeout_ms=5_000
            )
            try:
                with pytest.raises(REFUSED):
                    async with asyncio.timeout(30):
                        await producer.send_and_wait(
                            private.topic, b"{}", key=unique("probe").encode()
                        )
            finally:
                await producer.stop()
            # The relay has been refused as long as the probe: nothing went out, all kept.
            assert await private.pending(order_ids) == ORDERS
            await watch.wait_for(set(), 0)
            assert watch.of(set(order_ids)) == []
        finally:
            await cluster.start()
        events = await watch.wait_for(set(order_ids), ORDERS, within=120)
    # None lost; a duplicate (same event_id) would be allowed, a missing one not.
    assert {e.key for e in events} == set(order_ids)
    assert len({e.value["event_id"] for e in events}) == ORDERS
    assert await eventually(lambda: private.pending(order_ids), lambda n: n == 0) == 0
    # Every event acknowledged before the outage survived it and the restart of two brokers.
    on_topic = await events_from_start(private, set(before_ids))
    assert acknowledged <= on_topic, acknowledged - on_topic
