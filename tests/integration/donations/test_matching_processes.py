"""Two donations consumer processes in one group match against shared budgets; one is
killed with SIGKILL mid-stream. Afterwards every budget is exact to the fen."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient

from shared.events import DLQ_SUFFIX, OrderCompleted, OrderRefunded
from shared.kafka import ensure_topics, make_producer
from tests.conftest import unique
from tests.integration.donations.conftest import Donations, create_project, publish, put_rule
from tests.integration.donations.test_campaigns import campaign_body, post_campaign
from tests.integration.donations.test_consumer import refunded
from tests.integration.donations.test_items import order_with
from tests.support import eventually

ORDERS = 240
PER_ORDER = 100  # fixed rule; the ratio campaign matches it 1:1

COUNTS = """
SELECT count(*) FILTER (WHERE kind = 'accrual') AS accruals,
       count(*) FILTER (WHERE kind = 'reversal') AS reversals
FROM ledger_entry WHERE seller_id = $1
"""
BUDGETS = """
SELECT c.campaign_id, c.budget_minor, c.matched_minor,
       coalesce(sum(CASE e.kind WHEN 'match' THEN e.amount_minor ELSE -e.amount_minor END), 0)
           AS ledger_net,
       coalesce(sum(e.amount_minor) FILTER (WHERE e.kind = 'match'), 0) AS gross
FROM campaign c LEFT JOIN ledger_entry e ON e.campaign_id = c.campaign_id
WHERE c.campaign_id = ANY($1::text[])
GROUP BY c.campaign_id ORDER BY c.campaign_id
"""
PER_ORDER_MATCHES = """
SELECT order_id, campaign_id,
       count(*) FILTER (WHERE kind = 'match') AS matches,
       sum(CASE kind WHEN 'match' THEN amount_minor ELSE -amount_minor END) AS net
FROM ledger_entry WHERE seller_id = $1 AND campaign_id IS NOT NULL
GROUP BY order_id, campaign_id
"""
SELLER_NET = """
SELECT order_id,
       sum(CASE kind WHEN 'accrual' THEN amount_minor ELSE -amount_minor END) AS net
FROM ledger_entry WHERE seller_id = $1 AND kind IN ('accrual', 'reversal') GROUP BY order_id
"""


async def start_consumer(topic: str, group: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.donations.consumer_process",
            topic,
            group,
            "15",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(os.environ),
        )


async def test_two_consumer_processes_one_killed_budgets_stay_exact(
    http: httpx.AsyncClient,
    donations: Donations,
    db: asyncpg.Connection[Any],
    tmp_path: Path,
) -> None:
    settings = donations.settings
    topic = settings.topic(unique("matchproc.orders.lifecycle"))
    await ensure_topics(settings.kafka_bootstrap, [topic], 4)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    seller = unique("seller")
    project = await create_project(http, donations.charities_url)
    await put_rule(
        http, donations, seller, project_id=project, mode="fixed", amount_minor=PER_ORDER
    )
    ratio = campaign_body(project, budget_minor=9_050)  # 90 full matches and a partial one
    per_unit = campaign_body(project, ratio_bp=0, per_item_minor=7, budget_minor=1_234)
    for body in (ratio, per_unit):
        assert (await post_campaign(http, donations, body)).status_code == 201
    campaigns = [ratio["campaign_id"], per_unit["campaign_id"]]

    events: list[OrderCompleted | OrderRefunded] = []
    refunds = 0
    for n in range(ORDERS):
        order = order_with(seller, 1_000, [("tea", 1 + n % 3)])
        events.append(order)
        if n % 4 == 1:  # a full refund gives the order's matches back to the budgets
            events.append(refunded(order, "r1", 1_000, 1_000))
            refunds += 1
        if n % 7 == 3:  # a redelivered completion
            events.append(order)
    thirds = [events[: len(events) // 3], events[len(events) // 3 : 2 * len(events) // 3]]
    thirds.append(events[2 * len(events) // 3 :])

    async def counts() -> tuple[int, int]:
        row = await db.fetchrow(COUNTS, seller)
        assert row is not None
        return int(row["accruals"]), int(row["reversals"])

    group = unique("matchproc")
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    first = await start_consumer(topic, group, logs[0])
    second = await start_consumer(topic, group, logs[1])

    async def applied() -> list[int]:
        return [log.read_text().count("applied") for log in logs]

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()

    async def group_state() -> tuple[str, int]:
        [response] = await admin.describe_consumer_groups([group])
        description = response.groups[
            0
        ]  # (error, group_id, state, protocol type, protocol, members)
        return str(description[2]), len(description[5])

    try:
        # both members hold partitions before the stream starts
        await eventually(group_state, lambda g: g == ("Stable", 2), within=60)
        await publish(producer, topic, *thirds[0])
        await eventually(counts, lambda c: c[0] >= ORDERS // 4, within=60)
        await publish(producer, topic, *thirds[1])
        await eventually(counts, lambda c: c[0] >= ORDERS // 2, within=60)
        done_before_kill = await applied()
        first.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, offsets uncommitted
        assert await first.wait() == -signal.SIGKILL
        await publish(producer, topic, *thirds[2])
        await eventually(counts, lambda c: c == (ORDERS, refunds), within=60)
    finally:
        for process in (first, second):
            if process.returncode is None:
                process.kill()
                await process.wait()
        await producer.stop()
        try:
            await admin.delete_topics([topic, topic + DLQ_SUFFIX])
        finally:
            await admin.close()

    assert min(done_before_kill) > 0, done_before_kill  # both processes did work
    budgets = await db.fetch(BUDGETS, campaigns)
    assert len(budgets) == 2
    for row in budgets:
        # matched_minor is exactly the ledger's matches minus match reversals, within budget
        assert row["matched_minor"] == row["ledger_net"], dict(row)
        assert 0 <= row["matched_minor"] <= row["budget_minor"], dict(row)
        assert row["gross"] >= row["budget_minor"], dict(row)  # the budget did run out
    seller_net = {r["order_id"]: r["net"] for r in await db.fetch(SELLER_NET, seller)}
    assert len(seller_net) == ORDERS
    for row in await db.fetch(PER_ORDER_MATCHES, seller):
        assert row["matches"] == 1, dict(row)  # no order matched twice by one campaign
        assert row["order_id"] in seller_net
        if seller_net[row["order_id"]] == 0:
            assert row["net"] == 0, dict(row)  # a full refund took the whole match back
        else:
            assert row["net"] > 0, dict(row)
