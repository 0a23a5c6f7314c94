"""A consumer that dies after its database commit but before its offset commit."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from services.donations.consumer import LedgerHandler
from shared.db import create_pool, is_transient
from shared.events import DLQ_SUFFIX, TOPIC_LEDGER
from shared.kafka import BatchConsumer, Record, ensure_topics, make_producer
from shared.money import apply_basis_points
from tests.conftest import unique
from tests.integration.donations.conftest import Donations, create_project, publish, put_rule
from tests.integration.donations.test_consumer import completed, refunded

LEDGER = """
SELECT order_id, event_key, kind, amount_minor, entry_id, rule_version
FROM ledger_entry WHERE seller_id = $1 ORDER BY order_id, event_key
"""


async def test_a_restart_before_the_offset_commit_gives_the_same_ledger(
    http: httpx.AsyncClient, donations: Donations, db: asyncpg.Connection[Any]
) -> None:
    settings = donations.settings
    topic = settings.topic(unique("restart.orders.lifecycle"))
    await ensure_topics(settings.kafka_bootstrap, [topic], 3)
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(http, donations, seller, project_id=project, mode="percent", basis_points=200)

    events: list[Any] = []
    expected_net: dict[str, int] = {}
    for n in range(30):
        order = completed(unique("order"), seller, 1_000 + 37 * n)
        total = order.order.total_minor
        events.append(order)
        expected_net[order.order.order_id] = apply_basis_points(total, 200)
        if n % 3 == 1:  # partial refund in the same batch as the completion
            events.append(refunded(order, "r1", total // 2, total // 2))
            expected_net[order.order.order_id] = apply_basis_points(total - total // 2, 200)
        if n % 5 == 2:  # a full refund, delivered twice
            full = refunded(order, "r-full", total, total)
            events += [full, full]
            expected_net[order.order.order_id] = 0
    events.append(events[0])  # a duplicate completion

    pool = await create_pool(settings.dsn(settings.donations_db), min_size=1, max_size=2)
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await publish(producer, topic, *events)
        handler = LedgerHandler(pool, settings.topic(TOPIC_LEDGER))
        group = unique("restart")

        # 1. The first consumer handles everything, commits the database... and dies.
        first = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await first.start()
        records: list[Record] = []
        try:
            async with asyncio.timeout(60):
                while len(records) < len(events):
                    batches = await first.getmany(timeout_ms=500)
                    records += [r for part in batches.values() for r in part]
            assert await handler.handle(records) == []
        finally:
            await first.stop()  # no offset commit
        after_crash = [dict(r) for r in await db.fetch(LEDGER, seller)]
        recorded = handler.entries_recorded
        assert recorded == len(after_crash) > 0
        net: dict[str, int] = {}
        for row in after_crash:
            sign = 1 if row["kind"] == "accrual" else -1
            net[row["order_id"]] = net.get(row["order_id"], 0) + sign * row["amount_minor"]
        assert net == {k: v for k, v in expected_net.items() if v or k in net}
        assert all(v == 0 for k, v in expected_net.items() if k not in net)

        # 2. Its replacement in the same group gets every record again.
        second = BatchConsumer(
            bootstrap=settings.kafka_bootstrap,
            topic=topic,
            group_id=group,
            handler=handler.handle,
            producer=producer,
            handler_is_transient=is_transient,
        )
        await second.start()
        try:
            async with asyncio.timeout(60):
                await second.run_until_idle(1.0)
        finally:
            await second.close()
        assert second.records_done == len(events)
        assert handler.entries_recorded == recorded  # nothing new, nothing to publish
        assert [dict(r) for r in await db.fetch(LEDGER, seller)] == after_crash
    finally:
        await admin.delete_topics([topic, topic + DLQ_SUFFIX])
        await admin.close()
        await producer.stop()
        await pool.close()
