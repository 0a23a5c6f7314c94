"""The posting job: turns pending donations into posted (final) ones, once per order.

An order's donation is pending until its ``available_on`` (its ``completed_at`` plus the
return window). A refund that happened before ``available_on`` still reverses it, and
such a refund can reach this service late: its event may still sit in the orders outbox
or in Kafka when the window closes. Posting on the clock alone ("available_on <= now")
would post over it. So an order is posted only when, besides ``available_on <= now``,
no event of its partition of ``orders.lifecycle`` that happened before ``available_on``
can still be unapplied.

How the job knows (one check per pass, for every partition ``p``):

1. ``t0``: the job's clock, read first.
2. ``end(p)``: the partition's end offset in Kafka, read after ``t0``.
3. From the database (``consumer_position``, written by the consumer in the same
   transaction as the batch it applied): ``next(p)``, the next offset to apply, and
   ``seen(p)``, the latest ``occurred_at`` applied.
4. ``horizon(p) = max(seen(p), t0 if next(p) >= end(p))`` and
   ``safe_until(p) = horizon(p) - grace``. An order filed under ``p`` (the partition its
   ``order.completed`` came from) is posted when ``available_on <= safe_until(p)``.

Guaranteed, with no assumption: whatever was in ``p`` before the consumer's position has
been applied, and postings and refunds never interleave (the consumer locks a refunded
order's ``posting_due`` row, the job skips locked rows, and a refund that comes after the
posting is counted and reverses nothing: posted is final, ledger net == posted_minor).

Assumed, and what ``grace`` (``GFG_POSTING_GRACE_S``, default 3600 s) covers: every
orders event reaches Kafka within ``grace`` of its ``occurred_at``, measured on this
job's clock. That is the orders outbox relay's delay plus the clock skew between the
orders service and this one. Given it:
- caught up (``next(p) >= end(p)``): an event not in Kafka at ``t0`` arrives after
  ``t0``, so it happened after ``t0 - grace``: nothing before ``safe_until`` is missing.
  This is also what keeps a partition with no traffic from blocking posting forever.
- behind: an unapplied event is after the applied ones in ``p``, so it reached Kafka
  after the event with ``occurred_at == seen(p)`` did, which was no earlier than
  ``seen(p)``; it happened after ``seen(p) - grace``. Events of one key are published in
  commit order; across keys of one partition ``occurred_at`` interleaves by about a
  transaction's length, far inside ``grace``.
An hour is long against the relay's normal delay (milliseconds) and longer than an
outbox outage should last unnoticed (``gfg_outbox_oldest_age_seconds`` alerts well
before), and it costs nothing that matters: a donation that waits seven days is posted
an hour later. An outage longer than ``grace`` is the one case this cannot cover; a
refund it held back and that arrives after the posting reverses nothing and is counted
in ``gfg_donations_refunds_after_window_total{reason="after_posting"}``.

Also assumed: the partition count of ``orders.lifecycle`` does not change (adding
partitions moves keys, which breaks per-order ordering for every consumer anyway).
Accruals recorded before positions existed are filed under partition -1 and wait until
every partition is safe.

Each pass posts in batches, one transaction per batch: one statement selects the due
orders (``FOR UPDATE SKIP LOCKED``), sums their net from the ledger, inserts the postings
(``posting.order_id`` is unique, so a second job or a repeated pass posts nothing twice)
and deletes the due rows; a second adds one ``donation.posted`` per posting to the
outbox. Several service processes may run the job at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge

from services.donations import repository
from services.donations.repository import Position
from shared.db import Pool
from shared.events import DONATION_POSTED, DonationPosted, encode
from shared.observability import get_logger
from shared.outbox import OutboxMessage, enqueue
from shared.waiting import wait_at_most

log = get_logger(__name__)

POSTED = Counter("gfg_donations_posted_total", "Orders whose donation was posted", ["currency"])
POSTED_MINOR = Counter(
    "gfg_donations_posted_minor_total", "Amounts posted, in minor units", ["currency"]
)
SAFE_LAG = Gauge(
    "gfg_donations_posting_safe_lag_seconds",
    "How far the posting job's safe point trails its clock (the grace when caught up)",
)

UNKNOWN_PARTITION = -1


def safe_until(
    t0: datetime,
    end_offsets: Mapping[int, int],
    positions: Mapping[int, Position],
    grace: timedelta,
) -> dict[int, datetime]:
    """The latest ``available_on`` that may be posted, per partition (pure; see above).

    A partition with nothing applied and not caught up gets no entry (nothing of it is
    posted); partition -1 gets the earliest of all, if every partition has one.
    """
    safe: dict[int, datetime] = {}
    for partition, end in end_offsets.items():
        position = positions.get(partition)
        horizon = position.max_occurred_at if position is not None else None
        applied = position.next_offset if position is not None else 0
        if applied >= end and (horizon is None or t0 > horizon):
            horizon = t0
        if horizon is not None:
            safe[partition] = horizon - grace
    if safe and len(safe) == len(end_offsets):
        safe[UNKNOWN_PARTITION] = min(safe.values())
    return safe


def posted_messages(topic: str, rows: Sequence[asyncpg.Record]) -> list[OutboxMessage]:
    """One ``donation.posted`` per posting, keyed by order_id."""
    messages = []
    for row in rows:
        event = DonationPosted(
            occurred_at=row["posted_at"],
            order_id=row["order_id"],
            seller_id=row["seller_id"],
            project_id=row["project_id"],
            currency=row["currency"],
            posted_minor=row["posted_minor"],
            posted_at=row["posted_at"],
        )
        messages.append(
            OutboxMessage(topic, "order", row["order_id"], DONATION_POSTED, encode(event))
        )
    return messages


class PostingJob:
    """A background worker of the donations service, like the outbox relay."""

    def __init__(
        self,
        *,
        pool: Pool,
        bootstrap: str,
        orders_topic: str,
        ledger_topic: str,
        grace: timedelta,
        interval_s: float = 30.0,
        batch_size: int = 2000,
    ) -> None:
        self._pool = pool
        self._bootstrap = bootstrap
        self._orders_topic = orders_topic
        self._ledger_topic = ledger_topic
        self._grace = grace
        self._interval = interval_s
        self._batch_size = batch_size
        self._kafka: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.posted = 0

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            await kafka.stop()

    async def run(self) -> None:
        """Posts what is due every ``interval_s`` until ``stop()``; survives outages."""
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                await self.post_due()
                backoff = self._interval
            except Exception as exc:  # database or broker away: try again later
                log.warning("posting job failed", error=f"{type(exc).__name__}: {exc}")
                await self.close()
                backoff = min(max(backoff * 2, 0.1), 5.0)
            await self._sleep(backoff)
        await self.close()

    async def post_due(self) -> int:
        """Posts every order that is due now, in batches; returns how many."""
        safe = await self.safe_until()
        total = 0
        while safe:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await repository.post_due(conn, safe, datetime.now(UTC), self._batch_size)
                await enqueue(conn, posted_messages(self._ledger_topic, rows))
            for row in rows:
                POSTED.labels(row["currency"]).inc()
                POSTED_MINOR.labels(row["currency"]).inc(row["posted_minor"])
            total += len(rows)
            if len(rows) < self._batch_size:
                break
        self.posted += total
        return total

    async def safe_until(self) -> dict[int, datetime]:
        t0 = datetime.now(UTC)
        ends = await self._end_offsets()
        async with self._pool.acquire() as conn:
            positions = await repository.consumer_positions(conn, self._orders_topic)
        safe = safe_until(t0, ends, positions, self._grace)
        if UNKNOWN_PARTITION in safe:
            SAFE_LAG.set((t0 - safe[UNKNOWN_PARTITION]).total_seconds())
        return safe

    async def _end_offsets(self) -> dict[int, int]:
        if self._kafka is None:
            kafka = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
            await kafka.start()
            self._kafka = kafka
        kafka = self._kafka
        partitions = kafka.partitions_for_topic(self._orders_topic)
        if not partitions:
            # Asking for partition 0 puts the topic in the client's metadata (every topic
            # has a partition 0); the client keeps it fresh from then on.
            await kafka.end_offsets([TopicPartition(self._orders_topic, 0)])
            partitions = kafka.partitions_for_topic(self._orders_topic) or set()
        tps = [TopicPartition(self._orders_topic, p) for p in sorted(partitions)]
        ends = await kafka.end_offsets(tps) if tps else {}
        return {tp.partition: offset for tp, offset in ends.items()}

    async def _sleep(self, seconds: float) -> None:
        await wait_at_most(self._stopping, seconds)
