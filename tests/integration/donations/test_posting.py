"""The return window on real PostgreSQL and Kafka: a donations app with a 2 s window.

It has its own database and topics (the package's app keeps the 7-day window): pending
turns into posted, donation.posted is on the topic exactly once per order (net 0 too), a
refund inside the window reverses and one after it does not, a refund held back past the
window's end is never posted over, and neither redelivery nor more posting jobs post twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from services.donations.app import create_app
from services.donations.config import Settings
from services.donations.posting import PostingJob
from shared.db import connect, create_pool
from shared.events import TOPIC_LEDGER, TOPIC_ORDERS, encode
from shared.kafka import Producer
from tests.conftest import unique
from tests.integration.donations.conftest import Donations, create_project, publish, put_rule
from tests.integration.donations.test_campaigns import campaign_body, post_campaign
from tests.integration.donations.test_consumer import completed, refunded
from tests.support import eventually, serve

WINDOW = timedelta(seconds=2)
# Longer than a held-back refund is held (1 s past available_on) plus the consumer's
# latency; short enough for tests.
GRACE = timedelta(seconds=4)


@dataclass(frozen=True)
class Windowed:
    donations: Donations
    db: asyncpg.Connection[Any]


async def _ensure_database(settings: Settings) -> None:
    conn = await connect(settings.dsn("postgres"))
    try:
        exists = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", settings.donations_db
        )
        if not exists:
            await conn.execute(f'CREATE DATABASE "{settings.donations_db}"')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def windowed(charities_url: str) -> AsyncIterator[Windowed]:
    base = Settings()
    settings = Settings(
        charities_url=charities_url,
        donations_db=base.donations_db + "_window",
        topic_prefix=base.topic_prefix + "window.",
        return_window_s=int(WINDOW.total_seconds()),
        posting_grace_s=GRACE.total_seconds(),
        posting_interval_s=0.2,
    )
    await _ensure_database(settings)
    async with serve(create_app(settings)) as url:
        conn = await connect(settings.dsn(settings.donations_db))
        try:
            yield Windowed(Donations(url, charities_url, settings), conn)
        finally:
            await conn.close()


def _final_refunds(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "gfg_donations_refunds_after_window_total", {"reason": reason}
    )
    return value or 0.0


async def _receipt(http: httpx.AsyncClient, w: Windowed, order_id: str) -> dict[str, Any]:
    response = await http.get(f"{w.donations.url}/v1/orders/{order_id}/donation")
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return body


async def _wait_receipt(
    http: httpx.AsyncClient, w: Windowed, order_id: str, **expected: Any
) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return await _receipt(http, w, order_id)

    return await eventually(
        probe, lambda r: bool(r) and all(r.get(k) == v for k, v in expected.items())
    )


async def _posted_events(w: Windowed, order_ids: set[str]) -> Counter[str]:
    """donation.posted events per order on the ledger topic, once nothing of these orders
    is left in the outbox (so everything they will ever publish is on the topic)."""

    async def pending() -> int:
        count: int = await w.db.fetchval(
            "SELECT count(*) FROM outbox WHERE aggregate_id = ANY($1::text[])", list(order_ids)
        )
        return count

    await eventually(pending, lambda n: n == 0)
    settings = w.donations.settings
    topic = settings.topic(TOPIC_LEDGER)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    found: Counter[str] = Counter()
    try:
        await consumer.end_offsets([TopicPartition(topic, 0)])  # loads the topic's metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        assert partitions
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async with asyncio.timeout(30):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        event = orjson.loads(record.value)
                        if event["type"] == "donation.posted" and event["order_id"] in order_ids:
                            assert record.key == event["order_id"].encode()
                            found[event["order_id"]] += 1
                            found[f"{event['order_id']}:minor"] += event["posted_minor"]
    finally:
        await consumer.stop()
    return found


async def _rule(http: httpx.AsyncClient, w: Windowed, basis_points: int) -> str:
    seller = unique("seller")
    project = await create_project(http, w.donations.charities_url)
    await put_rule(
        http, w.donations, seller, project_id=project, mode="percent", basis_points=basis_points
    )
    return seller


def _topic(w: Windowed) -> str:
    return w.donations.settings.topic(TOPIC_ORDERS)


async def test_pending_turns_posted_once_even_at_net_zero(
    http: httpx.AsyncClient, windowed: Windowed, order_producer: Producer
) -> None:
    w = windowed
    seller = await _rule(http, w, 1000)  # 10 %
    kept = completed(unique("order"), seller, 5_000)
    emptied = completed(unique("order"), seller, 3_000)
    full = refunded(emptied, "r-all", 3_000, 3_000)  # inside the window: reverses it all
    await publish(order_producer, _topic(w), kept, emptied, full)

    pending = await _wait_receipt(http, w, kept.order.order_id, net_minor=500)
    assert kept.order.completed_at is not None
    available_on = kept.order.completed_at + WINDOW
    if pending["status"] == "pending":  # the usual case: read before the window closed
        assert pending["final"] is (datetime.now(UTC) >= available_on)
    assert datetime.fromisoformat(pending["available_on"]) == available_on
    [accrual] = pending["entries"]
    assert datetime.fromisoformat(accrual["available_on"]) == available_on

    posted = await _wait_receipt(http, w, kept.order.order_id, status="posted")
    assert (posted["final"], posted["net_minor"]) == (True, 500)
    zero = await _wait_receipt(http, w, emptied.order.order_id, status="posted")
    assert zero["net_minor"] == 0
    assert [e["kind"] for e in zero["entries"]] == ["accrual", "reversal"]
    assert zero["entries"][1]["available_on"] is None

    ids = {kept.order.order_id, emptied.order.order_id}
    found = await _posted_events(w, ids)
    assert found[kept.order.order_id] == 1
    assert found[f"{kept.order.order_id}:minor"] == 500
    assert found[emptied.order.order_id] == 1
    assert found[f"{emptied.order.order_id}:minor"] == 0
    rows = await w.db.fetch(
        "SELECT order_id, posted_minor, seller_id FROM posting WHERE order_id = ANY($1::text[])",
        list(ids),
    )
    assert sorted((r["order_id"], r["posted_minor"]) for r in rows) == sorted(
        [(kept.order.order_id, 500), (emptied.order.order_id, 0)]
    )


async def test_a_refund_after_the_window_reverses_nothing(
    http: httpx.AsyncClient, windowed: Windowed, order_producer: Producer
) -> None:
    w = windowed
    seller = await _rule(http, w, 1000)
    early = completed(unique("order"), seller, 4_000)
    inside = refunded(early, "r-in", 2_000, 2_000)
    inside = msgspec.structs.replace(inside, occurred_at=early.order.completed_at)
    late = completed(unique("order"), seller, 4_000)
    assert late.order.completed_at is not None
    after = refunded(late, "r-after", 4_000, 4_000)
    after = msgspec.structs.replace(after, occurred_at=late.order.completed_at + WINDOW)
    before = _final_refunds("after_window")

    await publish(order_producer, _topic(w), early, inside, late, after)

    reversed_ = await _wait_receipt(http, w, early.order.order_id, status="posted")
    assert reversed_["net_minor"] == 200  # 10 % of what was kept
    final = await _wait_receipt(http, w, late.order.order_id, status="posted")
    assert (final["net_minor"], final["final"]) == (400, True)
    assert [e["kind"] for e in final["entries"]] == ["accrual"]
    assert _final_refunds("after_window") >= before + 1
    found = await _posted_events(w, {early.order.order_id, late.order.order_id})
    assert found[f"{early.order.order_id}:minor"] == 200
    assert found[f"{late.order.order_id}:minor"] == 400


async def test_a_refund_held_back_past_the_window_is_never_posted_over(
    http: httpx.AsyncClient, windowed: Windowed, order_producer: Producer
) -> None:
    """The refund happens inside the window, but its event reaches Kafka only after the
    window closed (as if it sat in the orders outbox). A job posting on the clock alone
    posts 500 before it arrives; this one waits, so the posting is after the reversal."""
    w = windowed
    seller = await _rule(http, w, 1000)
    order = completed(unique("order"), seller, 5_000)
    assert order.order.completed_at is not None
    available_on = order.order.completed_at + WINDOW
    refund = msgspec.structs.replace(
        refunded(order, "r-held", 5_000, 5_000), occurred_at=order.order.completed_at + WINDOW / 4
    )
    await publish(order_producer, _topic(w), order)
    await _wait_receipt(http, w, order.order.order_id, net_minor=500)

    async def clock() -> datetime:
        return datetime.now(UTC)

    # Hold the refund until well after the window closed (a naive job polls every 0.2 s).
    await eventually(clock, lambda now: now >= available_on + timedelta(seconds=1), interval=0.05)
    held = await _receipt(http, w, order.order.order_id)
    assert (held["status"], held["final"]) == ("pending", True)
    await publish(order_producer, _topic(w), refund)

    posted = await _wait_receipt(http, w, order.order.order_id, status="posted")
    assert posted["net_minor"] == 0
    assert [(e["kind"], e["amount_minor"]) for e in posted["entries"]] == [
        ("accrual", 500),
        ("reversal", 500),
    ]
    found = await _posted_events(w, {order.order.order_id})
    assert (found[order.order.order_id], found[f"{order.order.order_id}:minor"]) == (1, 0)


async def test_redelivery_and_more_jobs_never_post_twice(
    http: httpx.AsyncClient, windowed: Windowed, order_producer: Producer
) -> None:
    w = windowed
    settings = w.donations.settings
    seller = await _rule(http, w, 500)
    orders = [completed(unique("order"), seller, 2_000 + n) for n in range(20)]
    refunds = [refunded(o, "r1", 1_000, 1_000) for o in orders[::2]]
    await publish(order_producer, _topic(w), *orders, *refunds)

    pool = await create_pool(settings.dsn(settings.donations_db), min_size=1, max_size=4)
    jobs = [
        PostingJob(
            pool=pool,
            bootstrap=settings.kafka_bootstrap,
            orders_topic=settings.topic(TOPIC_ORDERS),
            ledger_topic=settings.topic(TOPIC_LEDGER),
            grace=GRACE,
            batch_size=3,
        )
        for _ in range(3)
    ]
    ids = {o.order.order_id for o in orders}
    try:

        async def posted_count() -> int:
            # three more jobs race the service's own, in small batches, until all posted
            await asyncio.gather(*(job.post_due() for job in jobs))
            count: int = await w.db.fetchval(
                "SELECT count(*) FROM posting WHERE order_id = ANY($1::text[])", list(ids)
            )
            return count

        await eventually(posted_count, lambda n: n == len(orders), interval=0.2)
        # every event again (a consumer redelivering after a crash), after the postings;
        # then wait until the consumer's positions are past all of them
        sent: dict[int, int] = {}
        for event in [*orders, *refunds]:
            key = getattr(event, "order_id", None) or event.order.order_id  # type: ignore[attr-defined]
            meta = await order_producer.send_and_wait(_topic(w), encode(event), key=key.encode())
            sent[meta.partition] = max(sent.get(meta.partition, -1), meta.offset)

        async def behind() -> list[int]:
            rows = await w.db.fetch(
                "SELECT kafka_partition, next_offset FROM consumer_position WHERE topic = $1",
                _topic(w),
            )
            applied = {r["kafka_partition"]: r["next_offset"] for r in rows}
            return [p for p, offset in sent.items() if applied.get(p, 0) <= offset]

        await eventually(behind, lambda parts: not parts)
        await asyncio.gather(*(job.post_due() for job in jobs))
    finally:
        for job in jobs:
            await job.close()
        await pool.close()

    found = await _posted_events(w, ids)
    assert {order_id: found[order_id] for order_id in ids} == dict.fromkeys(ids, 1)
    rows = await w.db.fetch(
        "SELECT order_id, count(*) AS n FROM posting WHERE order_id = ANY($1::text[]) "
        "GROUP BY order_id",
        list(ids),
    )
    assert {r["order_id"]: r["n"] for r in rows} == dict.fromkeys(ids, 1)
    due: int = await w.db.fetchval(
        "SELECT count(*) FROM posting_due WHERE order_id = ANY($1::text[])", list(ids)
    )
    assert due == 0


async def test_matches_follow_the_window_and_are_posted_with_their_order(
    http: httpx.AsyncClient, windowed: Windowed, order_producer: Producer
) -> None:
    """A refund inside the window takes its share of the match back; one after it takes
    nothing (the match is final with the donation); the posting includes the matches."""
    w = windowed
    seller = unique("seller")
    project = await create_project(http, w.donations.charities_url)
    await put_rule(http, w.donations, seller, project_id=project, mode="percent", basis_points=1000)
    body = campaign_body(project, budget_minor=10_000)
    response = await post_campaign(http, w.donations, body)
    assert response.status_code == 201, response.text
    early = completed(unique("order"), seller, 4_000)
    inside = refunded(early, "r-in", 2_000, 2_000)
    inside = msgspec.structs.replace(inside, occurred_at=early.order.completed_at)
    late = completed(unique("order"), seller, 4_000)
    assert late.order.completed_at is not None
    after = refunded(late, "r-after", 4_000, 4_000)
    after = msgspec.structs.replace(after, occurred_at=late.order.completed_at + WINDOW)

    await publish(order_producer, _topic(w), early, inside, late, after)

    halved = await _wait_receipt(http, w, early.order.order_id, status="posted")
    assert (halved["net_minor"], halved["matched_minor"]) == (200, 200)
    assert [e["kind"] for e in halved["entries"]] == [
        "accrual",
        "match",
        "reversal",
        "match_reversal",
    ]
    kept = await _wait_receipt(http, w, late.order.order_id, status="posted")
    assert (kept["net_minor"], kept["matched_minor"], kept["final"]) == (400, 400, True)
    assert [e["kind"] for e in kept["entries"]] == ["accrual", "match"]
    assert all(e["available_on"] is None for e in kept["entries"][1:])
    found = await _posted_events(w, {early.order.order_id, late.order.order_id})
    assert found[f"{early.order.order_id}:minor"] == 400  # 200 seller's + 200 matched
    assert found[f"{late.order.order_id}:minor"] == 800
    campaign = await w.db.fetchval(
        "SELECT matched_minor FROM campaign WHERE campaign_id = $1", body["campaign_id"]
    )
    assert campaign == 600
