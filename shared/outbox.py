"""Transactional outbox: events written with the state change, relayed to Kafka after.

This module owns the ``outbox`` table: its DDL is ``SCHEMA``, which a producing service's
migrations include with a ``-- include: shared.outbox`` line (see shared/migrations.py):

    id bigserial, topic, aggregate_type, aggregate_id (the Kafka key), type,
    payload bytea (the encoded event, event_id inside), bucket (hash of the key), created_at,
    traceparent (the W3C trace context of the work that wrote the row; ``TRACEPARENT_SCHEMA``)

``enqueue`` adds rows inside the caller's transaction (``INSERT_INTO`` and
``message_args`` let a service fold that insert into one statement of its own).

The relay polls: every ``idle_poll_seconds`` (0.05 s) while it finds nothing, with one
index probe (``EXISTS``). ``SCHEMA`` also made a trigger NOTIFY channel ``outbox`` on
every insert, so that the relay woke at once; ``NO_NOTIFY_SCHEMA`` drops it. A transaction
that issued NOTIFY holds, while it commits, a lock that is global to the PostgreSQL
cluster, through its WAL flush: every such commit of every service waited for the one
before it, and single-order writes could not share a flush (group commit).
``OutboxRelay`` publishes them, each with its ``traceparent`` as a record header (through a
``publish`` span of its own when the trace is sampled; see shared/tracing.py).

Why no lost or reordered event:
- The relay never tracks a "last published id". It reads whatever rows exist, oldest
  first, and deletes each row only after the broker acknowledged it, in the same
  transaction that read it. A row whose transaction commits late (a lower id appearing
  after higher ones were published) is simply still there on the next pass.
- Rows with the same key are written by transactions that lock the same aggregate row,
  so their ids follow their commit order and the relay publishes them in that order.
- Partitioned ownership: rows fall into ``BUCKETS`` buckets by key, and a relay publishes
  only buckets whose session advisory lock it holds. Several relays (one per service
  process) may run; a bucket has one owner at a time, so one key's events are never
  published by two relays out of order. A relay that dies drops its locks with its
  connection and the others take its buckets over on their next claim. The fetch locks
  rows with a plain ``FOR UPDATE`` (not ``SKIP LOCKED``): during such a takeover the new
  owner waits for the old owner's in-flight batch instead of skipping past it and
  publishing a key's later rows first.
- Killed between the broker's ack and the delete, a relay's transaction rolls back and
  the rows are published again with the same ``event_id``: a duplicate, never a loss.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge, Histogram

from shared.db import Conn
from shared.kafka import Producer
from shared.observability import get_logger
from shared.tracing import RecordSpans, kafka_headers
from shared.waiting import wait_at_most

log = get_logger(__name__)

# The relays' unit of ownership. The table's generated ``bucket`` column uses it, and
# SCHEMA refuses to run on an outbox built with another count.
BUCKETS = 16
_BUCKET_EXPR = f"((hashtext(aggregate_id) & 2147483647) % {BUCKETS})"

SCHEMA = f"""
DO $outbox$
BEGIN
    IF to_regclass('outbox') IS NULL THEN
        CREATE TABLE outbox (
            id             bigserial   PRIMARY KEY,
            topic          text        NOT NULL,
            aggregate_type text        NOT NULL,
            aggregate_id   text        NOT NULL,
            type           text        NOT NULL,
            payload        bytea       NOT NULL,
            bucket         smallint    NOT NULL GENERATED ALWAYS AS {_BUCKET_EXPR} STORED,
            created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX outbox_bucket_id ON outbox (bucket, id);
    ELSIF (
        SELECT pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attrdef d
        JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
        WHERE d.adrelid = 'outbox'::regclass AND a.attname = 'bucket'
    ) IS DISTINCT FROM '{_BUCKET_EXPR}' THEN
        RAISE EXCEPTION 'outbox.bucket is not %: BUCKETS changed', '{_BUCKET_EXPR}';
    END IF;
END
$outbox$;

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
"""
# Added after SCHEMA (whose text applied databases have checksummed): a producing service
# includes it in a later migration as ``-- include: shared.outbox:TRACEPARENT_SCHEMA``.
TRACEPARENT_SCHEMA = "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text;"
# SCHEMA's NOTIFY trigger, dropped (``-- include: shared.outbox:NO_NOTIFY_SCHEMA``): in
# PostgreSQL a committing transaction that issued NOTIFY holds a lock on "database 0"
# (cluster-wide) through its WAL flush, so single-row writers serialised on it; measured
# in BENCHMARKS.md ("Commits without NOTIFY"). The relay polls instead.
NO_NOTIFY_SCHEMA = """
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
"""
_LOCK_NAMESPACE = 0x6766_6F62  # "gfob"

PUBLISHED = Counter("gfg_outbox_published_total", "Outbox rows published", ["service"])
BACKLOG = Gauge("gfg_outbox_backlog", "Outbox rows not yet published", ["service"])
OLDEST_AGE = Gauge("gfg_outbox_oldest_age_seconds", "Age of the oldest pending row", ["service"])
PUBLISH_LATENCY = Histogram(
    "gfg_outbox_publish_latency_seconds",
    "From the row's commit to the broker's acknowledgement",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    aggregate_type: str
    aggregate_id: str
    type: str
    payload: bytes
    # The W3C traceparent to publish the event under (shared.tracing); None: untraced.
    traceparent: str | None = None


# The head of every insert into the outbox; the values follow ``message_args``' order.
INSERT_INTO = "INSERT INTO outbox (topic, aggregate_type, aggregate_id, type, payload, traceparent)"

_ENQUEUE = f"""
{INSERT_INTO}
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[])
"""


def message_args(message: OutboxMessage) -> tuple[str, str, str, str, bytes, str | None]:
    """A message's values in ``INSERT_INTO``'s column order."""
    return (
        message.topic,
        message.aggregate_type,
        message.aggregate_id,
        message.type,
        message.payload,
        message.traceparent,
    )


# From this many rows up, ``enqueue`` writes by COPY: for 1,000 rows it takes a third of
# the client CPU, about 80 % of the backend's and half the time of the unnest insert (see
# BENCHMARKS.md); below it the insert's one round trip beats COPY's two.
COPY_FROM = 64
_COLUMNS = ("topic", "aggregate_type", "aggregate_id", "type", "payload", "traceparent")


async def enqueue(conn: Conn, messages: Sequence[OutboxMessage]) -> None:
    """Adds ``messages`` to the outbox inside the caller's transaction: one insert, or a
    COPY for ``COPY_FROM`` rows or more."""
    if not messages:
        return
    if len(messages) >= COPY_FROM:
        await conn.copy_records_to_table(
            "outbox", records=[message_args(m) for m in messages], columns=_COLUMNS
        )
        return
    await conn.execute(
        _ENQUEUE,
        [m.topic for m in messages],
        [m.aggregate_type for m in messages],
        [m.aggregate_id for m in messages],
        [m.type for m in messages],
        [m.payload for m in messages],
        [m.traceparent for m in messages],
    )


_CLAIM = "SELECT pg_try_advisory_lock($1, $2)"
_FETCH = """
SELECT id, topic, aggregate_id, payload, traceparent,
       extract(epoch FROM created_at)::float8 AS created
FROM outbox WHERE bucket = ANY($1::smallint[]) ORDER BY id LIMIT $2
FOR UPDATE
"""
_DELETE = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
# The idle poll: one index probe, outside any transaction.
_ANY_ROW = "SELECT EXISTS (SELECT 1 FROM outbox WHERE bucket = ANY($1::smallint[]))"
_STATS = """
SELECT count(*) AS backlog,
       coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS age
FROM outbox
"""


class OutboxRelay:
    """Publishes this service's outbox to Kafka; one per service process."""

    def __init__(
        self,
        *,
        service: str,
        dsn: str,
        pool: asyncpg.Pool[Any],
        producer: Producer,
        batch_size: int = 5000,
        idle_poll_seconds: float = 0.05,
        claim_interval_seconds: float = 5.0,
        after_publish: Callable[[Sequence[int]], Awaitable[None]] | None = None,
    ) -> None:
        self.service = service
        self._dsn = dsn
        self._pool = pool
        self._producer = producer
        self._batch_size = batch_size
        self._idle_poll = idle_poll_seconds
        self._claim_interval = claim_interval_seconds
        # Test hook: runs after the broker's ack and before the rows are deleted; raising
        # there aborts the transaction exactly like a relay dying at that point.
        self._after_publish = after_publish
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock_conn: asyncpg.Connection[Any] | None = None
        self._owned: set[int] = set()
        self._last_claim = 0.0
        self._last_stats = 0.0
        self.published = 0

    @property
    def owned_buckets(self) -> frozenset[int]:
        return frozenset(self._owned)

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def claim(self) -> frozenset[int]:
        """Connects and claims the free buckets now (``run()`` does this by itself)."""
        await self._ensure_lock_connection()
        self._last_claim = 0.0
        await self._claim_buckets()
        return self.owned_buckets

    async def release(self) -> None:
        """Gives up every bucket (as a relay that died would), for tests and tools."""
        await self._drop_lock_connection()

    async def run(self) -> None:
        """Runs until ``stop()``, surviving database and broker outages."""
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                await self._ensure_lock_connection()
                await self._claim_buckets()
                published = await self.publish_once()
                await self._refresh_stats()
                backoff = 0.1
                if published < self._batch_size:
                    await self._wait_for_work()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                await self._drop_lock_connection()
                log.warning("outbox relay waiting for the database", error=str(exc))
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # broker errors: rows stay pending, try again
                log.warning("outbox relay publish failed", error=f"{type(exc).__name__}: {exc}")
                await self._producer.recover(exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        await self._drop_lock_connection()

    async def publish_once(self) -> int:
        """Publishes one batch of the owned buckets; returns how many rows it published."""
        if not self._owned:
            return 0
        owned = sorted(self._owned)
        if not await self._pool.fetchval(_ANY_ROW, owned):
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_FETCH, owned, self._batch_size)
            if not rows:
                return 0
            send = self._producer.send
            spans = RecordSpans("publish", SpanKind.PRODUCER)
            follow = spans.follow
            futures = []
            try:
                for r in rows:
                    topic, key = r["topic"], r["aggregate_id"]
                    headers = kafka_headers(follow(r["traceparent"], topic=topic, key=key))
                    futures.append(
                        await send(topic, r["payload"], key=key.encode(), headers=headers)
                    )
                await asyncio.gather(*futures)
            except BaseException as exc:
                spans.end(exc)
                raise
            spans.end()
            ids = [r["id"] for r in rows]
            if self._after_publish is not None:
                await self._after_publish(ids)
            await conn.execute(_DELETE, ids)
        now = time.time()
        latency = PUBLISH_LATENCY.labels(self.service)
        for r in rows[:: max(1, len(rows) // 100)]:  # a sample keeps the histogram cheap
            latency.observe(max(0.0, now - r["created"]))
        PUBLISHED.labels(self.service).inc(len(rows))
        self.published += len(rows)
        return len(rows)

    async def _ensure_lock_connection(self) -> None:
        if self._lock_conn is not None and not self._lock_conn.is_closed():
            return
        self._owned.clear()
        conn: asyncpg.Connection[Any] = await asyncpg.connect(self._dsn)
        self._lock_conn = conn
        self._last_claim = 0.0

    async def _drop_lock_connection(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        self._owned.clear()
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()

    async def _claim_buckets(self) -> None:
        now = time.monotonic()
        if len(self._owned) == BUCKETS or now - self._last_claim < self._claim_interval:
            return
        self._last_claim = now
        assert self._lock_conn is not None
        for bucket in range(BUCKETS):
            if bucket not in self._owned and await self._lock_conn.fetchval(
                _CLAIM, _LOCK_NAMESPACE, bucket
            ):
                self._owned.add(bucket)
        log.debug("outbox buckets owned", service=self.service, buckets=sorted(self._owned))

    async def _refresh_stats(self) -> None:
        now = time.monotonic()
        if now - self._last_stats < 5.0:
            return
        self._last_stats = now
        row = await self._pool.fetchrow(_STATS)
        assert row is not None
        BACKLOG.labels(self.service).set(row["backlog"])
        OLDEST_AGE.labels(self.service).set(row["age"])

    async def _wait_for_work(self) -> None:
        await wait_at_most(self._wake, self._idle_poll)
        self._wake.clear()

    async def _sleep(self, seconds: float) -> None:
        await wait_at_most(self._stopping, seconds)
