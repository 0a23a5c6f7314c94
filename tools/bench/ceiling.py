"""What this machine can do without our services: raw aiokafka and raw asyncpg COPY.

Both use the same data as the pipeline benchmark (``order.completed`` events and order
rows), so ``pipeline.orders_per_s`` can be read against them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer

from shared.db import connect
from shared.events import OrderCompleted, OrderItem, OrderSnapshot, encode
from shared.kafka import ensure_topics, make_producer
from shared.settings import CommonSettings
from tools.bench import Figure, ensure_database

EVENTS = 200_000
ROWS = 200_000
BENCH_DB = "ceiling_bench"


def completed_events(n: int) -> list[tuple[bytes, bytes]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        order_id = f"ceil-{i}"
        event = OrderCompleted(
            order=OrderSnapshot(
                order_id=order_id,
                seller_id=f"seller-{i % 1000}",
                currency="CNY",
                total_minor=5900,
                items=[OrderItem(item_id="tea", quantity=2, unit_price_minor=2950)],
                placed_at=now,
                completed_at=now,
            )
        )
        out.append((order_id.encode(), encode(event)))
    return out


async def kafka_events_per_s(settings: CommonSettings, n: int = EVENTS) -> float:
    """Produce ``n`` events and consume them back concurrently: first send to last receipt."""
    topic = f"bench.ceiling.{uuid.uuid4().hex[:8]}"
    await ensure_topics(
        settings.kafka_bootstrap,
        [topic],
        settings.topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        min_insync=settings.kafka_min_insync,
    )
    payloads = await asyncio.to_thread(completed_events, n)
    producer = make_producer(settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"bench-ceiling-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await producer.start()
    await consumer.start()
    try:
        received = 0

        async def consume() -> None:
            nonlocal received
            while received < n:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                received += sum(len(records) for records in batches.values())
                if batches:
                    await consumer.commit()

        consuming = asyncio.create_task(consume())
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in payloads]
        await asyncio.gather(*futures)
        await asyncio.wait_for(consuming, timeout=300)
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def pg_copy_rows_per_s(settings: CommonSettings, n: int = ROWS) -> float:
    """COPY ``n`` order rows (the orders table's columns) into a fresh table."""
    await ensure_database(settings, BENCH_DB)
    conn = await connect(settings.dsn(BENCH_DB))
    now = datetime.now(UTC)
    rows = [
        (f"ceil-{i}", f"seller-{i % 1000}", "CNY", 5900, "completed", now, now, b"\x00" * 32)
        for i in range(n)
    ]
    try:
        await conn.execute("DROP TABLE IF EXISTS ceiling_order")
        await conn.execute(
            """CREATE TABLE ceiling_order (
                 order_id text PRIMARY KEY, seller_id text NOT NULL, currency text NOT NULL,
                 total_minor bigint NOT NULL, status text NOT NULL,
                 placed_at timestamptz NOT NULL, completed_at timestamptz,
                 request_hash bytea NOT NULL)"""
        )
        started = time.perf_counter()
        for chunk in range(0, n, 10_000):
            await conn.copy_records_to_table("ceiling_order", records=rows[chunk : chunk + 10_000])
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE ceiling_order")
        return n / elapsed
    finally:
        await conn.close()


async def run() -> list[Figure]:
    settings = CommonSettings(topic_prefix="bench.")
    kafka = await kafka_events_per_s(settings)
    copy = await pg_copy_rows_per_s(settings)
    return [
        Figure("ceiling.kafka_events_per_s", kafka, "events/s"),
        Figure("ceiling.pg_copy_rows_per_s", copy, "rows/s"),
        Figure("ceiling.orders_per_s", min(kafka, copy), "orders/s"),
    ]
