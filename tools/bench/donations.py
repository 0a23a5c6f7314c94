"""Donations benchmark: order.completed events turned into ledger entries, per second.

- ``donations.consumer_events_per_s``: every feature on. 100k order.completed events for
  1000 sellers with rules (half fixed, half percent) on 50 projects, each project with a
  matching campaign active (1:1 plus 1 per unit, a budget that never runs out), pre-loaded
  onto ``bench.donations.orders.lifecycle``, then consumed by the service's own
  BatchConsumer + LedgerHandler; timed from the first batch handed to the handler to the
  last offset commit. Every accrual gets a match entry, two ``donation.recorded`` outbox
  rows, a ``posting_due`` row and two ``log_pending`` rows (the log trigger); every batch
  locks and updates its projects' campaigns and the partitions' positions. The ledger and
  the campaigns' budgets are checked afterwards.
- ``donations.consumer_plain_events_per_s``: the same in the same run before the
  campaigns exist (no matching).
- ``donations.consumer_cpu_us_per_event`` / ``donations.consumer_db_cpu_us_per_event``:
  CPU microseconds per event of the consumer's process and of the PostgreSQL backends
  serving it (from /proc), for the pass with every feature on; the plain pass's are
  ``..._plain_...``. They vary far less than the rates on a loaded machine.
- ``donations.matching_cost_us_per_event``: what matching adds, in CPU microseconds per
  event (process + database), between the two passes.
- ``donations.naive_events_per_s``: a smaller sample consumed by a naive handler that
  opens one transaction per event with per-event round trips (the design we avoid).

Runs in its own database ``donations_bench`` (created if missing, emptied at start) and on
a ``bench.``-prefixed topic read by fresh consumer groups, so it never touches the data of
``make run`` or of the tests. ``GFG_BENCH_DONATIONS_DB`` and ``GFG_BENCH_TOPIC_PREFIX``
choose another database and prefix (to run beside another benchmark on the same servers).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.donations.app import MIGRATIONS
from services.donations.config import Settings
from services.donations.consumer import LedgerHandler
from services.donations.repository import rule_from_row
from services.donations.rules import ACCRUAL_KEY, apply_rule, entry_id
from shared.db import create_pool
from shared.events import (
    TOPIC_LEDGER,
    DonationRecorded,
    LedgerEntry,
    OrderCompleted,
    OrderItem,
    OrderSnapshot,
    encode,
    order_event_decoder,
)
from shared.kafka import Producer, Record, ensure_topics, make_producer
from shared.migrations import migrate
from shared.outbox import OutboxMessage, enqueue
from tools.bench import Consumed, Figure, consume_timed, ensure_database

DATABASE = os.environ.get("GFG_BENCH_DONATIONS_DB", "donations_bench")
TOPIC_PREFIX = os.environ.get("GFG_BENCH_TOPIC_PREFIX", "bench.")
PROJECTS = 50
TOPIC = "donations.orders.lifecycle"
EVENTS = 100_000
NAIVE_EVENTS = 3_000
SELLERS = 1000
RULE_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def _settings() -> Settings:
    return Settings(
        donations_db=DATABASE,
        topic_prefix=TOPIC_PREFIX,
        jwt_secret=os.environ.get("GFG_JWT_SECRET", "bench-secret-not-for-production-0123456789"),
        log_level="WARNING",
    )


async def _prepare_database(settings: Settings) -> None:
    await ensure_database(settings, DATABASE)
    await migrate(settings.dsn(DATABASE), MIGRATIONS)
    conn = await asyncpg.connect(settings.dsn(DATABASE))
    try:
        await conn.execute(
            "TRUNCATE ledger_entry, log_pending, outbox, donation_rule, campaign, posting_due"
        )
        rng = random.Random(11)
        rows = []
        for n in range(SELLERS):
            fixed = n % 2 == 0
            rows.append(
                (
                    f"bench-seller-{n}",
                    1,
                    uuid.UUID(int=n % PROJECTS + 1),
                    "fixed" if fixed else "percent",
                    rng.randint(1, 20) if fixed else None,
                    None if fixed else rng.randint(10, 300),
                    None if fixed else 1,
                    None if fixed else 5000,
                    "CNY",
                    True,
                    RULE_EPOCH,
                )
            )
        await conn.copy_records_to_table("donation_rule", records=rows, columns=_RULE_COLUMNS)
    finally:
        await conn.close()


_RULE_COLUMNS = [
    "seller_id",
    "version",
    "project_id",
    "mode",
    "amount_minor",
    "basis_points",
    "min_minor",
    "max_minor",
    "currency",
    "active",
    "effective_from",
]


async def _add_campaigns(pool: asyncpg.Pool[Any]) -> None:
    """One campaign per project, matching every benchmark order, never running out."""
    await pool.execute(
        "INSERT INTO campaign (campaign_id, sponsor, project_id, ratio_bp, per_item_minor,"
        " budget_minor, currency, starts_at, ends_at)"
        " SELECT 'bench-' || n, 'Bench sponsor', ('00000000-0000-0000-0000-' ||"
        " lpad(to_hex(n), 12, '0'))::uuid, 10000, 1, 1000000000000, 'CNY', $1, $2"
        " FROM generate_series(1, $3::int) AS n",
        RULE_EPOCH,
        RULE_EPOCH + timedelta(days=365),
        PROJECTS,
    )


def _events(count: int, tag: str) -> list[tuple[bytes, bytes]]:
    rng = random.Random(hash(tag) & 0xFFFF)
    placed = RULE_EPOCH + timedelta(days=30)
    out = []
    for n in range(count):
        order_id = f"bench-{tag}-{n}"
        quantity = rng.randint(1, 5)
        price = rng.randint(100, 50_000)
        event = OrderCompleted(
            order=OrderSnapshot(
                order_id=order_id,
                seller_id=f"bench-seller-{rng.randrange(SELLERS)}",
                currency="CNY",
                total_minor=quantity * price,
                items=[OrderItem(item_id="sku", quantity=quantity, unit_price_minor=price)],
                placed_at=placed,
                completed_at=placed + timedelta(hours=1),
            )
        )
        out.append((order_id.encode(), encode(event)))
    return out


async def _group_at_end(settings: Settings, topic: str, group: str) -> None:
    """A fresh group would start at the beginning (earlier runs): commit it at the end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        # ensure_topics created the topic with the configured partition count
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        end = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.commit(end)
    finally:
        await consumer.stop()


async def _produce(producer: Producer, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    futures = [await producer.send(topic, value, key=key) for key, value in events]
    await asyncio.gather(*futures)


async def _consume(
    settings: Settings,
    topic: str,
    group: str,
    handler: Any,
    producer: Producer,
    total: int,
    pool: asyncpg.Pool[Any] | None = None,
) -> Consumed:
    return await consume_timed(
        pool=pool,
        bootstrap=settings.kafka_bootstrap,
        topic=topic,
        group=group,
        handler=handler,
        producer=producer,
        total=total,
        max_records=settings.consumer_max_records,
    )


class NaiveHandler:
    """One transaction and several round trips per event: what the real consumer avoids."""

    def __init__(self, pool: asyncpg.Pool[Any], ledger_topic: str) -> None:
        self._pool = pool
        self._ledger_topic = ledger_topic

    async def __call__(self, records: list[Record]) -> list[Any]:
        for record in records:
            event = order_event_decoder.decode(record.value)
            assert isinstance(event, OrderCompleted)
            order = event.order
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT * FROM donation_rule WHERE seller_id = $1 AND effective_from <= $2"
                    " ORDER BY version DESC LIMIT 1",
                    order.seller_id,
                    order.placed_at,
                )
                done = await conn.fetchval(
                    "SELECT 1 FROM ledger_entry WHERE order_id = $1 AND event_key = $2",
                    order.order_id,
                    ACCRUAL_KEY,
                )
                if row is None or done or not row["active"] or row["currency"] != order.currency:
                    continue
                rule = rule_from_row(row)
                amount = apply_rule(rule, order.total_minor)
                if amount <= 0:
                    continue
                now = datetime.now(UTC)
                new_id = entry_id(order.order_id, ACCRUAL_KEY)
                await conn.execute(
                    "INSERT INTO ledger_entry (entry_id, order_id, event_key, seller_id,"
                    " project_id, kind, amount_minor, currency, rule_version, event_id,"
                    " recorded_at) VALUES ($1, $2, $3, $4, $5, 'accrual', $6, $7, $8, $9, $10)"
                    " ON CONFLICT DO NOTHING",
                    new_id,
                    order.order_id,
                    ACCRUAL_KEY,
                    order.seller_id,
                    rule.project_id,
                    amount,
                    rule.currency,
                    rule.version,
                    event.event_id,
                    now,
                )
                payload = DonationRecorded(
                    occurred_at=now,
                    entry=LedgerEntry(
                        entry_id=uuid.UUID(new_id),
                        order_id=order.order_id,
                        seller_id=order.seller_id,
                        project_id=rule.project_id,
                        kind="accrual",
                        amount_minor=amount,
                        currency=rule.currency,
                        rule_version=rule.version,
                        recorded_at=now,
                    ),
                )
                await enqueue(
                    conn,
                    [
                        OutboxMessage(
                            self._ledger_topic,
                            "order",
                            order.order_id,
                            payload.type,
                            encode(payload),
                        )
                    ],
                )
        return []


async def run() -> list[Figure]:
    settings = _settings()
    await _prepare_database(settings)
    topic = settings.topic(TOPIC)
    await ensure_topics(
        settings.kafka_bootstrap,
        [topic],
        settings.topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        min_insync=settings.kafka_min_insync,
    )
    run_id = uuid.uuid4().hex[:8]
    fast_group, naive_group = f"bench.donations.fast.{run_id}", f"bench.donations.naive.{run_id}"
    await _group_at_end(settings, topic, fast_group)

    pool = await create_pool(settings.dsn(DATABASE), min_size=2, max_size=4)
    producer = make_producer(settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        events = _events(EVENTS, f"{run_id}-fast")
        await _produce(producer, topic, events)
        handler = LedgerHandler(pool, settings.topic(TOPIC_LEDGER))
        plain = await _consume(settings, topic, fast_group, handler, producer, EVENTS, pool)
        entries = await pool.fetchval("SELECT count(*) FROM ledger_entry")
        outbox = await pool.fetchval("SELECT count(*) FROM outbox")
        if not entries or entries != handler.entries_recorded or outbox != entries:
            raise AssertionError(
                f"ledger {entries}, outbox {outbox}, recorded {handler.entries_recorded}"
            )
        plain_us, plain_db_us = plain.us_per(EVENTS)
        print(
            f"# donations plain: {EVENTS} events in {plain.batches} batches,"
            f" {plain.seconds:.2f} s, {entries} entries; CPU {plain_us:.0f} us/event,"
            f" database {plain_db_us:.0f} us/event",
            file=sys.stderr,
        )

        await _add_campaigns(pool)
        matching_group = f"bench.donations.matching.{run_id}"
        await _group_at_end(settings, topic, matching_group)
        await _produce(producer, topic, _events(EVENTS, f"{run_id}-matching"))
        handler = LedgerHandler(pool, settings.topic(TOPIC_LEDGER))
        full = await _consume(settings, topic, matching_group, handler, producer, EVENTS, pool)
        matches = await pool.fetchval("SELECT count(*) FROM ledger_entry WHERE kind = 'match'")
        matched = await pool.fetchval("SELECT sum(matched_minor) FROM campaign")
        in_ledger = await pool.fetchval(
            "SELECT sum(amount_minor) FROM ledger_entry WHERE kind = 'match'"
        )
        if not matches or matched != in_ledger or matches * 2 != handler.entries_recorded:
            raise AssertionError(
                f"matches {matches}, matched {matched} vs {in_ledger},"
                f" recorded {handler.entries_recorded}"
            )
        full_us, full_db_us = full.us_per(EVENTS)
        print(
            f"# donations with matching: {EVENTS} events in {full.batches} batches,"
            f" {full.seconds:.2f} s, {matches} matches; CPU {full_us:.0f} us/event,"
            f" database {full_db_us:.0f} us/event",
            file=sys.stderr,
        )
        figures = [
            Figure("donations.consumer_events_per_s", EVENTS / full.seconds, "events/s"),
            Figure("donations.consumer_cpu_us_per_event", full_us, "us"),
            Figure("donations.consumer_db_cpu_us_per_event", full_db_us, "us"),
            Figure("donations.consumer_plain_events_per_s", EVENTS / plain.seconds, "events/s"),
            Figure("donations.consumer_plain_cpu_us_per_event", plain_us, "us"),
            Figure("donations.consumer_plain_db_cpu_us_per_event", plain_db_us, "us"),
            Figure(
                "donations.matching_cost_us_per_event",
                full_us + full_db_us - plain_us - plain_db_us,
                "us",
            ),
        ]

        await _group_at_end(settings, topic, naive_group)
        sample = _events(NAIVE_EVENTS, f"{run_id}-naive")
        await _produce(producer, topic, sample)
        naive = await _consume(
            settings,
            topic,
            naive_group,
            NaiveHandler(pool, settings.topic(TOPIC_LEDGER)),
            producer,
            NAIVE_EVENTS,
        )
        naive_rate = NAIVE_EVENTS / naive.seconds
        print(
            f"# donations naive: {NAIVE_EVENTS} events, {naive.seconds:.2f} s;"
            f" speed-up {EVENTS / full.seconds / naive_rate:.1f}x",
            file=sys.stderr,
        )
    finally:
        await producer.stop()
        await pool.close()
    return [*figures, Figure("donations.naive_events_per_s", naive_rate, "events/s")]
