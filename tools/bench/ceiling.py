"""What this machine can do without our services: the broker, raw aiokafka, raw COPY.

``kafka_broker_events_per_s`` is the broker's own ceiling, measured with Kafka's
``ProducerPerformance`` and ``ConsumerPerformance`` tools from the broker jars (the JVM
clients, acks=all and idempotence as our producer), with records the size of our
``order.completed`` events. The aiokafka figure is what a Python process gets from the
same broker, and the COPY figure what PostgreSQL takes in; all use the same data as the
pipeline benchmark, so ``pipeline.orders_per_s`` can be read against them.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from shared.db import connect
from shared.events import OrderCompleted, OrderItem, OrderSnapshot, encode
from shared.kafka import ensure_topics, make_producer
from shared.settings import CommonSettings
from tools.bench import Figure, ensure_database

EVENTS = 200_000
BROKER_EVENTS = 500_000
KAFKA_LIBS = Path(__file__).parents[2] / "deploy" / "kafka" / "libs"
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


async def _kafka_tool(tool: str, *args: str) -> str:
    """Runs one of Kafka's tools (``org.apache.kafka.tools.<tool>``); its stdout."""
    process = await asyncio.create_subprocess_exec(
        "java", "-Xmx1g", "-cp", f"{KAFKA_LIBS}/*", f"org.apache.kafka.tools.{tool}", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=600)
    if process.returncode != 0:
        raise RuntimeError(f"{tool} exited {process.returncode}: {err.decode()[-500:]}")
    return out.decode()


def producer_rate(output: str) -> float:
    """Records/s from ProducerPerformance's summary line (the last with 'records sent')."""
    lines = [line for line in output.splitlines() if "records sent" in line]
    match = re.search(r"records sent, ([0-9.]+) records/sec", lines[-1]) if lines else None
    if match is None:
        raise ValueError(f"no ProducerPerformance summary in: {output[-300:]!r}")
    return float(match.group(1))


def consumer_rate(output: str) -> float:
    """Messages/s (``nMsg.sec``) from ConsumerPerformance's CSV-like report."""
    lines = [line for line in output.splitlines() if line.strip()]
    header = next((i for i, line in enumerate(lines) if "nMsg.sec" in line), None)
    if header is None or header + 1 >= len(lines):
        raise ValueError(f"no ConsumerPerformance report in: {output[-300:]!r}")
    names = [name.strip() for name in lines[header].split(",")]
    values = [value.strip() for value in lines[header + 1].split(",")]
    return float(values[names.index("nMsg.sec")])


async def kafka_broker_events_per_s(
    settings: CommonSettings, n: int = BROKER_EVENTS
) -> tuple[float, float]:
    """The broker's produce and consume rates, measured by Kafka's own JVM tools."""
    topic = f"bench.broker.{uuid.uuid4().hex[:8]}"
    await ensure_topics(
        settings.kafka_bootstrap,
        [topic],
        settings.topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        min_insync=settings.kafka_min_insync,
    )
    record_size = len(completed_events(1)[0][1])
    produced = producer_rate(
        await _kafka_tool(
            "ProducerPerformance",
            "--topic", topic,
            "--num-records", str(n),
            "--record-size", str(record_size),
            "--throughput", "-1",
            "--producer-props", f"bootstrap.servers={settings.kafka_bootstrap}",
            "acks=all", "enable.idempotence=true", "linger.ms=5", "batch.size=262144",
        )
    )  # fmt: skip
    consumed = consumer_rate(
        await _kafka_tool(
            "ConsumerPerformance",
            "--bootstrap-server", settings.kafka_bootstrap,
            "--topic", topic,
            "--messages", str(n),
            "--timeout", "60000",
        )
    )  # fmt: skip
    return produced, consumed


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
    broker_produce, broker_consume = await kafka_broker_events_per_s(settings)
    kafka = await kafka_events_per_s(settings)
    copy = await pg_copy_rows_per_s(settings)
    return [
        Figure("ceiling.kafka_broker_produce_events_per_s", broker_produce, "events/s"),
        Figure("ceiling.kafka_broker_consume_events_per_s", broker_consume, "events/s"),
        Figure(
            "ceiling.kafka_broker_events_per_s", min(broker_produce, broker_consume), "events/s"
        ),
        Figure("ceiling.kafka_events_per_s", kafka, "events/s"),
        Figure("ceiling.pg_copy_rows_per_s", copy, "rows/s"),
        Figure("ceiling.orders_per_s", min(kafka, copy), "orders/s"),
    ]
