"""A real orders app (relay running) and a watch on its Kafka topic, per session; and
the same on a private broker or cluster, for the tests that stop brokers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.orders.app import create_app
from services.orders.config import Settings
from shared.auth import Role
from shared.events import TOPIC_ORDERS
from tests.conftest import bearer, unique
from tests.servers import PrivateKafka
from tests.support import serve


@dataclass(frozen=True)
class Orders:
    url: str
    settings: Settings


@pytest.fixture(scope="package")
def orders_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="package")
async def orders(orders_settings: Settings) -> AsyncIterator[Orders]:
    async with serve(create_app(orders_settings)) as url:
        yield Orders(url, orders_settings)


@pytest.fixture
async def http(orders: Orders) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=orders.url, timeout=30) as client:
        yield client


@dataclass
class Event:
    key: str
    partition: int
    offset: int
    value: dict[str, Any]
    headers: dict[str, bytes] = field(default_factory=dict)


@dataclass
class TopicWatch:
    """Everything published to a topic after the watch started (no consumer group needed)."""

    consumer: AIOKafkaConsumer
    seen: list[Event] = field(default_factory=list)

    async def _poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for r in records:
                key = r.key.decode() if r.key is not None else ""
                value = orjson.loads(r.value)
                self.seen.append(Event(key, r.partition, r.offset, value, dict(r.headers)))

    def of(self, keys: set[str]) -> list[Event]:
        return [e for e in self.seen if e.key in keys]

    async def wait_for(self, keys: set[str], count: int, within: float = 60.0) -> list[Event]:
        """At least ``count`` events keyed by ``keys``; then a short extra poll for extras."""
        deadline = time.monotonic() + within
        while len(self.of(keys)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.of(keys))} of {count} events arrived: {keys}")
            await self._poll()
        for _ in range(3):  # give an unwanted duplicate a chance to show up
            await self._poll()
        return self.of(keys)


async def start_watch(bootstrap: str, topic: str) -> TopicWatch:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=unique("orders-test"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    partitions = None
    for _ in range(100):
        await consumer._client.add_topic(topic)  # metadata for an unsubscribed topic
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            break
        await asyncio.sleep(0.1)
    assert partitions, f"topic {topic} not found"
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)  # pin the start before anything is published
    return TopicWatch(consumer)


@pytest.fixture(scope="package")
async def watch(orders: Orders) -> AsyncIterator[TopicWatch]:
    settings = orders.settings
    topic_watch = await start_watch(settings.kafka_bootstrap, settings.topic(TOPIC_ORDERS))
    try:
        yield topic_watch
    finally:
        await topic_watch.consumer.stop()


def storefront(*sellers: str) -> dict[str, str]:
    return bearer(Role.STOREFRONT, *sellers)


def new_order(seller_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": unique("ord"),
        "seller_id": seller_id,
        "currency": "CNY",
        "total_minor": 1250,
        "items": [
            {"item_id": "tea", "quantity": 2, "unit_price_minor": 500},
            {"item_id": "cup", "quantity": 1, "unit_price_minor": 250},
        ],
        "placed_at": "2025-11-11T08:00:00+08:00",
    }
    body.update(overrides)
    return body


@dataclass(frozen=True)
class PrivateOrders:
    """An orders app publishing to a private broker or cluster, with a watch on its topic."""

    http: httpx.AsyncClient
    watch: TopicWatch
    settings: Settings

    @property
    def topic(self) -> str:
        return self.settings.topic(TOPIC_ORDERS)

    async def pending(self, order_ids: Sequence[str]) -> int:
        """Outbox rows of these orders not yet acknowledged by the broker."""
        conn = await asyncpg.connect(self.settings.dsn(self.settings.orders_db))
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE aggregate_id = ANY($1::text[])",
                list(order_ids),
            )
            return count
        finally:
            await conn.close()


@asynccontextmanager
async def orders_on(kafka: PrivateKafka) -> AsyncIterator[PrivateOrders]:
    """The orders app on ``kafka``, with a database of its own: a relay of the shared
    app (same database) would otherwise publish its outbox to the shared broker."""
    shared = Settings()
    database = f"{shared.orders_db}_private_kafka"
    admin = await asyncpg.connect(shared.dsn("postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    settings = Settings(
        orders_db=database,
        kafka_bootstrap=kafka.bootstrap,
        kafka_replication_factor=kafka.replication_factor,
        kafka_min_insync=kafka.min_insync,
    )
    async with (
        serve(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        topic_watch = await start_watch(settings.kafka_bootstrap, settings.topic(TOPIC_ORDERS))
        try:
            yield PrivateOrders(http, topic_watch, settings)
        finally:
            await topic_watch.consumer.stop()
