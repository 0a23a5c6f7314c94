"""What tracing costs the donations consumer: process CPU seconds per 100,000 events.

``python -m tools.bench tracing`` (not in the default ``make bench`` list). The donations
benchmark's workload (100k ``order.completed`` events for 1,000 sellers with rules, each
writing a ledger entry and an outbox row) is consumed once per mode by the service's own
BatchConsumer + LedgerHandler, in this process, and the process's CPU time (all threads,
so the span exporter's too) is taken from the first poll to the export of the last span:

- ``off``: no ``traceparent`` headers, no tracer provider (the consumer as before tracing);
- ``unsampled``: every record has a traceparent with the sampled flag clear; no spans,
  the context is only carried to the outbox rows (tracing at ratio 0);
- ``ratio_0.01``: 1 % of the records sampled (what ``parentbased_traceidratio`` 0.01 at the
  orders POST gives downstream);
- ``sampled``: every record sampled (the default ``parentbased_always_on``): a ``process``
  span per event, exported as JSON lines.

The orders outbox relay is measured the same way (``tracing.relay_cpu_s_per_100k_<mode>``):
100,000 pre-filled outbox rows, without a traceparent (``off``) or with one (unsampled, 1 %
or all sampled: a ``publish`` span per sampled row), drained by one OutboxRelay.

``GFG_BENCH_TRACING_MODES`` (comma-separated) picks and orders the modes,
``GFG_BENCH_TRACING_PARTS`` the parts (``donations,relay``). Same database and topic prefix
settings as the donations benchmark; the relay uses ``GFG_BENCH_ORDERS_DB``
(``orders_bench_tracing``).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sys
import tempfile
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

import orjson

from services.donations.consumer import LedgerHandler
from services.orders.app import MIGRATIONS as ORDERS_MIGRATIONS
from shared.db import create_pool
from shared.events import ORDER_COMPLETED, TOPIC_LEDGER, TOPIC_ORDERS
from shared.kafka import Producer, ensure_topics, make_producer
from shared.migrations import migrate
from shared.outbox import OutboxRelay
from shared.tracing import TRACEPARENT, tracing
from tools.bench import Figure, consume_timed, ensure_database
from tools.bench.donations import (
    DATABASE,
    EVENTS,
    TOPIC,
    _events,
    _group_at_end,
    _prepare_database,
    _settings,
)

RATIOS = {"off": None, "unsampled": 0.0, "ratio_0.01": 0.01, "sampled": 1.0}
MODES = os.environ.get("GFG_BENCH_TRACING_MODES", "off,unsampled,ratio_0.01,sampled").split(",")
PARTS = os.environ.get("GFG_BENCH_TRACING_PARTS", "donations,relay").split(",")
ORDERS_DATABASE = os.environ.get("GFG_BENCH_ORDERS_DB", "orders_bench_tracing")
RELAY_ROWS = 100_000


def _traceparent(rng: random.Random, ratio: float) -> bytes:
    flags = "01" if rng.random() < ratio else "00"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{flags}".encode()


async def _produce(
    producer: Producer, topic: str, events: list[tuple[bytes, bytes]], ratio: float | None
) -> None:
    rng = random.Random(7)
    futures = []
    for key, value in events:
        headers = None if ratio is None else [(TRACEPARENT, _traceparent(rng, ratio))]
        futures.append(await producer.send(topic, value, key=key, headers=headers))
    await asyncio.gather(*futures)


async def run() -> list[Figure]:
    figures: list[Figure] = []
    if "donations" in PARTS:
        figures += await _donations()
    if "relay" in PARTS:
        figures += await _relay()
    return figures


async def _relay() -> list[Figure]:
    settings = _settings()
    topic = settings.topic(TOPIC_ORDERS)
    await ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions)
    await ensure_database(settings, ORDERS_DATABASE)
    dsn = settings.dsn(ORDERS_DATABASE)
    await migrate(dsn, ORDERS_MIGRATIONS)
    pool = await create_pool(dsn, max_size=4)
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    figures: list[Figure] = []
    try:
        for mode in MODES:
            ratio = RATIOS[mode]
            await pool.execute("TRUNCATE outbox")
            rng = random.Random(3)
            records = []
            for n in range(RELAY_ROWS):
                order_id = f"relay-{uuid.uuid4().hex[:16]}-{n}"
                payload = orjson.dumps(
                    {
                        "event_id": str(uuid.uuid4()),
                        "type": ORDER_COMPLETED,
                        "schema_version": 1,
                        "occurred_at": "2025-11-11T00:05:00Z",
                        "order": {"order_id": order_id, "seller_id": "s", "total_minor": 100},
                    }
                )
                context = None if ratio is None else _traceparent(rng, ratio).decode()
                records.append((topic, "order", order_id, ORDER_COMPLETED, payload, context))
            async with pool.acquire() as conn:
                await conn.copy_records_to_table(
                    "outbox",
                    records=records,
                    columns=["topic", "aggregate_type", "aggregate_id", "type", "payload"]
                    + ["traceparent"],
                )
            relay = OutboxRelay(service="tracing-bench", dsn=dsn, pool=pool, producer=producer)
            with tempfile.TemporaryDirectory() as folder:
                spans_file = Path(folder) / "orders.jsonl"
                cpu_started, started = time.process_time(), time.perf_counter()
                with tracing("orders", Path(folder)) if ratio is not None else nullcontext():
                    task = asyncio.create_task(relay.run())
                    try:
                        while relay.published < RELAY_ROWS:
                            if task.done():
                                task.result()
                                raise RuntimeError("relay stopped early")
                            await asyncio.sleep(0.05)
                        seconds = time.perf_counter() - started
                    finally:
                        await relay.stop()
                        await task
                cpu = time.process_time() - cpu_started
                spans = len(spans_file.read_bytes().splitlines()) if spans_file.exists() else 0
            print(
                f"# tracing relay {mode}: {RELAY_ROWS} rows, {seconds:.2f} s, {cpu:.2f} CPU s,"
                f" {spans} spans",
                file=sys.stderr,
            )
            scale = 100_000 / RELAY_ROWS
            figures += [
                Figure(f"tracing.relay_cpu_s_per_100k_{mode}", cpu * scale, "cpu_s"),
                Figure(f"tracing.relay_events_per_s_{mode}", RELAY_ROWS / seconds, "events/s"),
            ]
    finally:
        await producer.stop()
        await pool.close()
    return figures


async def _donations() -> list[Figure]:
    settings = _settings()
    topic = settings.topic(TOPIC)
    await ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions)
    producer = make_producer(settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    figures: list[Figure] = []
    run_id = uuid.uuid4().hex[:8]
    try:
        for mode in MODES:
            ratio = RATIOS[mode]
            await _prepare_database(settings)  # an empty ledger and outbox for every mode
            group = f"bench.tracing.{mode}.{run_id}"
            await _group_at_end(settings, topic, group)
            await _produce(producer, topic, _events(EVENTS, f"{run_id}-{mode}"), ratio)
            pool = await create_pool(settings.dsn(DATABASE), min_size=2, max_size=4)
            with tempfile.TemporaryDirectory() as folder:
                spans_file = Path(folder) / "donations.jsonl"
                started = time.process_time()
                with tracing("donations", Path(folder)) if ratio is not None else nullcontext():
                    handler = LedgerHandler(pool, settings.topic(TOPIC_LEDGER))
                    consumed = await consume_timed(
                        bootstrap=settings.kafka_bootstrap,
                        topic=topic,
                        group=group,
                        handler=handler,
                        producer=producer,
                        total=EVENTS,
                        max_records=settings.consumer_max_records,
                        timeout_s=1200,  # CPU seconds are the figure; a loaded machine is slow
                    )
                    seconds = consumed.seconds
                cpu = time.process_time() - started  # the last spans' export included
                spans = len(spans_file.read_bytes().splitlines()) if spans_file.exists() else 0
            traced = await pool.fetchval("SELECT count(traceparent) FROM outbox")
            await pool.close()
            print(
                f"# tracing {mode}: {EVENTS} events, {seconds:.2f} s, {cpu:.2f} CPU s,"
                f" {spans} spans, {traced} outbox rows with a traceparent",
                file=sys.stderr,
            )
            scale = 100_000 / EVENTS
            figures += [
                Figure(f"tracing.donations_cpu_s_per_100k_{mode}", cpu * scale, "cpu_s"),
                Figure(f"tracing.donations_events_per_s_{mode}", EVENTS / seconds, "events/s"),
            ]
    finally:
        await producer.stop()
    return figures
