"""The outbox relay's guarantees, on its own database so no other relay holds its buckets."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from services.orders.app import MIGRATIONS
from services.orders.config import Settings
from shared.db import create_pool
from shared.kafka import Producer, ensure_topics, make_producer
from shared.migrations import migrate
from shared.outbox import BUCKETS, COPY_FROM, OutboxMessage, OutboxRelay, enqueue
from shared.tracing import tracing
from tests.conftest import unique
from tests.integration.orders.conftest import TopicWatch, start_watch
from tests.support import eventually

RELAY_DB = "orders_relay_test"


class Bench:
    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any], producer: Producer):
        self.settings = settings
        self.dsn = settings.dsn(RELAY_DB)
        self.pool = pool
        self.producer = producer
        self.topic = settings.topic("orders.relay-check")

    def relay(self, **kw: Any) -> OutboxRelay:
        return OutboxRelay(
            service="orders-test", dsn=self.dsn, pool=self.pool, producer=self.producer, **kw
        )

    def message(self, key: str, seq: int) -> OutboxMessage:
        payload = orjson.dumps({"event_id": str(uuid.uuid4()), "type": "test.event", "seq": seq})
        return OutboxMessage(self.topic, "order", key, "test.event", payload)

    async def add(self, messages: Sequence[OutboxMessage]) -> None:
        async with self.pool.acquire() as conn:
            await enqueue(conn, messages)

    async def pending(self, keys: Sequence[str]) -> int:
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE aggregate_id = ANY($1::text[])", list(keys)
        )
        return count


@pytest.fixture(scope="package")
async def bench(orders_settings: Settings) -> AsyncIterator[Bench]:
    admin = await asyncpg.connect(orders_settings.dsn("postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", RELAY_DB):
            await admin.execute(f"CREATE DATABASE {RELAY_DB}")
    finally:
        await admin.close()
    await migrate(orders_settings.dsn(RELAY_DB), MIGRATIONS)
    pool = await create_pool(orders_settings.dsn(RELAY_DB))
    producer = make_producer(orders_settings.kafka_bootstrap)
    await producer.start()
    try:
        bench = Bench(orders_settings, pool, producer)
        await ensure_topics(orders_settings.kafka_bootstrap, [bench.topic], 4)
        yield bench
    finally:
        await producer.stop()
        await pool.close()


@pytest.fixture(scope="package")
async def relay_watch(bench: Bench) -> AsyncIterator[TopicWatch]:
    topic_watch = await start_watch(bench.settings.kafka_bootstrap, bench.topic)
    try:
        yield topic_watch
    finally:
        await topic_watch.consumer.stop()


async def drain(relay: OutboxRelay) -> None:
    while await relay.publish_once():
        pass


async def test_late_commit_is_still_published(bench: Bench, relay_watch: TopicWatch) -> None:
    relay = bench.relay()
    assert await relay.claim() == frozenset(range(BUCKETS))
    early, late = unique("early"), unique("late")
    conn = await asyncpg.connect(bench.dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await enqueue(conn, [bench.message(early, 0)])
        early_id = await conn.fetchval("SELECT id FROM outbox WHERE aggregate_id = $1", early)
        await bench.add([bench.message(late, 0)])
        late_id = await bench.pool.fetchval("SELECT id FROM outbox WHERE aggregate_id = $1", late)
        assert early_id < late_id  # the trap: a lower id commits after a higher one

        await drain(relay)
        await relay_watch.wait_for({late}, 1)
        assert relay_watch.of({early}) == []

        await tx.commit()
        await drain(relay)
        (event,) = await relay_watch.wait_for({early}, 1)
        assert event.value["seq"] == 0
        assert await bench.pending([early, late]) == 0
    finally:
        await conn.close()
        await relay.release()


async def test_each_rows_trace_context_travels_as_a_record_header(
    bench: Bench, relay_watch: TopicWatch, tmp_path: Path
) -> None:
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    unsampled, sampled = f"00-{trace_id}-{caller}-00", f"00-{trace_id}-{caller}-01"
    plain, quiet, traced = unique("plain"), unique("quiet"), unique("traced")
    relay = bench.relay()
    await relay.claim()
    try:
        with tracing("orders", tmp_path):
            await bench.add(
                [
                    bench.message(plain, 0),
                    dataclasses.replace(bench.message(quiet, 0), traceparent=unsampled),
                    dataclasses.replace(bench.message(traced, 0), traceparent=sampled),
                ]
            )
            await drain(relay)
            events = {e.key: e for e in await relay_watch.wait_for({plain, quiet, traced}, 3)}
    finally:
        await relay.release()
    assert events[plain].headers == {}
    assert events[quiet].headers == {"traceparent": unsampled.encode()}  # passed on, no span
    version, trace, span_id, flags = events[traced].headers["traceparent"].decode().split("-")
    assert (version, trace, flags) == ("00", trace_id, "01")
    (span,) = [orjson.loads(line) for line in (tmp_path / "orders.jsonl").read_bytes().splitlines()]
    assert span["name"] == f"publish {bench.topic}"
    assert span["kind"] == "PRODUCER"
    assert span["span_id"] == span_id
    assert span["parent_span_id"] == caller
    assert span["attributes"]["messaging.kafka.message.key"] == traced


async def test_relay_dying_after_the_ack_loses_nothing(
    bench: Bench, relay_watch: TopicWatch
) -> None:
    key = unique("crash")

    async def die(ids: Sequence[int]) -> None:
        raise RuntimeError("relay killed between the broker's ack and the delete")

    doomed = bench.relay(after_publish=die)
    await doomed.claim()
    await bench.add([bench.message(key, n) for n in range(3)])
    with pytest.raises(RuntimeError, match="relay killed"):
        await drain(doomed)
    await doomed.release()
    assert await bench.pending([key]) == 3  # rolled back: still pending

    survivor = bench.relay()
    await survivor.claim()
    try:
        await drain(survivor)
    finally:
        await survivor.release()
    events = await relay_watch.wait_for({key}, 6)
    assert [e.value["seq"] for e in events] == [0, 1, 2, 0, 1, 2]
    first, again = events[:3], events[3:]
    assert [e.value["event_id"] for e in first] == [e.value["event_id"] for e in again]
    assert await bench.pending([key]) == 0


async def test_two_relays_publish_each_row_once_in_key_order(
    bench: Bench, relay_watch: TopicWatch
) -> None:
    relays = [bench.relay(claim_interval_seconds=0.2), bench.relay(claim_interval_seconds=0.2)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    keys = [unique("pair") for _ in range(40)]
    try:
        for seq in range(5):
            for start in range(0, len(keys), 10):  # many small transactions, relays running
                await bench.add([bench.message(k, seq) for k in keys[start : start + 10]])
        await eventually(lambda: bench.pending(keys), lambda n: n == 0)
        owned = [r.owned_buckets for r in relays]
        assert not owned[0] & owned[1]
        assert owned[0] | owned[1] == frozenset(range(BUCKETS))
    finally:
        for r in relays:
            await r.stop()
        await asyncio.gather(*tasks)
    events = await relay_watch.wait_for(set(keys), len(keys) * 5)
    assert len(events) == len(keys) * 5  # exactly once
    for key in keys:
        assert [e.value["seq"] for e in events if e.key == key] == [0, 1, 2, 3, 4]


async def test_a_batch_written_by_copy_is_relayed_in_key_order(
    bench: Bench, relay_watch: TopicWatch
) -> None:
    # ``enqueue`` of COPY_FROM rows or more writes by COPY; the polling relay finds them.
    relay = bench.relay()
    task = asyncio.create_task(relay.run())
    keys = [unique("copied") for _ in range(5)]
    messages = [bench.message(k, seq) for seq in range(20) for k in keys]
    assert len(messages) >= COPY_FROM
    try:
        await eventually(lambda: asyncio.sleep(0, relay.owned_buckets), lambda o: len(o) > 0)
        await bench.add(messages)
        events = await relay_watch.wait_for(set(keys), len(messages), within=30)
    finally:
        await relay.stop()
        await task
    for key in keys:
        assert [e.value["seq"] for e in events if e.key == key] == list(range(20))
