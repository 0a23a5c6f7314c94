"""Kafka clients: topic setup, an idempotent producer, and a batch consumer loop.

The consumer loop is the one way every service consumes (aiokafka's documented pattern):
``getmany`` a batch, hand it to the service's handler (which writes it in one database
transaction), publish any dead letters, then commit ``offset + 1`` per partition. Offsets
are committed only after the handler's transaction has committed; handlers are idempotent
on the event's natural key, so a crash between the two redelivers a batch that then
records nothing twice. That keeps offsets in Kafka (one source of truth for lag and
tooling) instead of a second table per consumer.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    DuplicateSequenceNumber,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.helpers import create_ssl_context
from murmurhash2 import murmurhash2
from prometheus_client import Counter, Gauge, Histogram

from shared.events import DLQ_SUFFIX
from shared.observability import get_logger

if TYPE_CHECKING:
    from shared.settings import CommonSettings

log = get_logger(__name__)

CONSUMED = Counter(
    "gfg_consumer_records_total", "Records handled by a consumer", ["group", "outcome"]
)
BATCH_SIZE = Histogram(
    "gfg_consumer_batch_size",
    "Records per consumed batch",
    ["group"],
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000),
)
BATCH_SECONDS = Histogram("gfg_consumer_batch_seconds", "Time to handle one batch", ["group"])
LAG = Gauge(
    "gfg_consumer_lag", "Records behind the high watermark", ["group", "topic", "partition"]
)
DEAD_LETTERS = Counter("gfg_dead_letters_total", "Records sent to a dead-letter topic", ["topic"])

Record: TypeAlias = ConsumerRecord  # ConsumerRecord[bytes, bytes]; aiokafka ships no types


@dataclass(frozen=True)
class KafkaAccess:
    """Where the brokers are and how to authenticate to them: the options every client
    (producer, consumer, admin) gets. A plain bootstrap string means PLAINTEXT."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = None

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> KafkaAccess:
        def text(path: object) -> str | None:
            return str(path) if path is not None else None

        password = settings.kafka_sasl_plain_password
        key_password = settings.kafka_ssl_key_password
        return cls(
            bootstrap=settings.kafka_bootstrap,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_plain_username,
            sasl_plain_password=password.get_secret_value() if password else None,
            ssl_cafile=text(settings.kafka_ssl_cafile),
            ssl_certfile=text(settings.kafka_ssl_certfile),
            ssl_keyfile=text(settings.kafka_ssl_keyfile),
            ssl_key_password=key_password.get_secret_value() if key_password else None,
        )

    def client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments shared by every client kind."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_plain_username,
                sasl_plain_password=self.sasl_plain_password,
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=self.ssl_key_password,
            )
        return options


# A bootstrap string (PLAINTEXT: tests and local tools) or the full access settings.
Kafka: TypeAlias = str | KafkaAccess


def client_options(kafka: Kafka) -> dict[str, Any]:
    access = kafka if isinstance(kafka, KafkaAccess) else KafkaAccess(kafka)
    return access.client_options()


# After these the idempotent producer never recovers by itself (aiokafka issue #1017: a
# broker restart can leave it rejecting every send with OutOfOrderSequenceNumber).
FATAL_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    DuplicateSequenceNumber,
    InvalidProducerIdMapping,
)


class Producer:
    """An idempotent (acks=all) producer that replaces itself after a fatal producer error.

    Same calls as ``AIOKafkaProducer`` (start, stop, send, send_and_wait, client) plus
    ``reset()``; a new producer gets a new producer id, so its sequence numbers start
    clean. Unsent records are the callers' to resend (the outbox and the consumers'
    dead-letter path both retry whole batches).
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._producer = AIOKafkaProducer(**options)
        self._started = False
        self.resets = 0

    @property
    def client(self) -> Any:
        return self._producer.client

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        await self._producer.stop()

    async def _ensure_started(self) -> None:
        if not self._started:
            await self.start()

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        await self._ensure_started()
        return await self._producer.send(topic, value, key=key, headers=headers)

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        await self._ensure_started()
        return await self._producer.send_and_wait(topic, value, key=key)

    async def reset(self) -> None:
        """Replaces the producer; never raises (a failed start is retried on the next send)."""
        old, self._producer = self._producer, AIOKafkaProducer(**self._options)
        self._started = False
        self.resets += 1
        log.warning("kafka producer replaced after a fatal error", resets=self.resets)
        try:
            await old.stop()
            await self.start()
        except Exception as exc:
            log.warning("kafka producer restart deferred", error=f"{type(exc).__name__}: {exc}")

    async def recover(self, exc: BaseException) -> bool:
        """Resets if ``exc`` is a fatal producer error; says whether it did."""
        if isinstance(exc, FATAL_PRODUCER_ERRORS):
            await self.reset()
            return True
        return False


_MURMUR2_SEED = 0x9747B28C


def kafka_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Kafka's default partitioner (murmur2 of the key, as the Java client does), in C.

    aiokafka's own is pure Python and was a third of the outbox relay's CPU; this one
    places every key on the same partition as aiokafka's and Java's.
    """
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[(murmurhash2(key, _MURMUR2_SEED) & 0x7FFFFFFF) % len(all_partitions)]


def make_producer(bootstrap: Kafka, **overrides: Any) -> Producer:
    """Idempotent (acks=all) producer: per-partition order survives retries."""
    options: dict[str, Any] = {
        **client_options(bootstrap),
        "partitioner": kafka_partitioner,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 512 * 1024,
        "request_timeout_ms": 15_000,
        "retry_backoff_ms": 200,
    }
    options.update(overrides)
    return Producer(options)


async def ensure_topics(
    bootstrap: Kafka,
    names: Iterable[str],
    partitions: int,
    *,
    replication_factor: int = 1,
    min_insync: int = 1,
) -> list[str]:
    """Creates the missing topics and their ``.dlq`` twins; returns those created now.

    With ``replication_factor`` 3 and ``min_insync`` 2 an acks=all write is acknowledged
    only once two brokers hold it, and unclean leader election stays off, so no
    acknowledged record is lost with one broker; with two down, writes fail (the outbox
    keeps them) instead of living on one disk. Existing topics are left as they are.
    """
    wanted: list[str] = []
    for name in names:
        wanted += [name, name + DLQ_SUFFIX]
    configs = {
        "min.insync.replicas": str(min_insync),
        "unclean.leader.election.enable": "false",
    }
    admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=partitions,
                        replication_factor=replication_factor,
                        topic_configs=configs,
                    )
                    for name in missing
                ]
            )
            for topic_error in getattr(response, "topic_errors", []):
                name, code = topic_error[0], topic_error[1]
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a concurrent start won)
                    raise KafkaError(f"creating topic {name}: error code {code}")
            log.info("topics created", topics=missing)
        return missing
    finally:
        await admin.close()


async def kafka_reachable(producer: Producer) -> None:
    if not await producer.client.force_metadata_update():
        raise ConnectionError("Kafka metadata request failed")


def is_transient(exc: BaseException) -> bool:
    """Network and broker errors: 'try the same batch again later', never 'the data is
    bad'. A handler's own such errors (its database's) are named to ``BatchConsumer``."""
    return isinstance(exc, OSError | TimeoutError | KafkaError)


ErrorCheck = Callable[[BaseException], bool]


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    reason: str


# A dead letter must fit the broker's message limit (1 MiB by default) whatever the
# record was: base64, JSON escaping and the reason can make it larger than the original,
# and a dead letter the broker refuses fails its batch again on every retry.
DLQ_MAX_VALUE_BYTES = 900 * 1024
_DLQ_TEXT_MAX_CHARS = 4096


def _clip(text: str) -> str:
    if len(text) <= _DLQ_TEXT_MAX_CHARS:
        return text
    return f"{text[:_DLQ_TEXT_MAX_CHARS]}... ({len(text)} characters)"


def dead_letter_value(letter: DeadLetter, max_bytes: int = DLQ_MAX_VALUE_BYTES) -> bytes:
    """The dead letter's JSON: where the record was (topic, partition, offset), why it
    failed, its key and value. If that exceeds ``max_bytes`` (minus the record key, which
    travels too), the value is cut to a base64 prefix of the original bytes and marked
    ``"truncated": true`` with ``value_bytes`` (the original size): the record itself
    stays in its topic at that offset for as long as the topic keeps it."""
    record = letter.record
    value: bytes = record.value or b""
    body: dict[str, Any] = {
        "reason": _clip(letter.reason),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": _clip(record.key.decode("utf-8", "replace")) if record.key is not None else None,
    }
    try:
        body["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        body["value"] = base64.b64encode(value).decode()
        body["value_encoding"] = "base64"
    encoded = orjson.dumps(body)
    room = max_bytes - len(record.key or b"")
    if len(encoded) <= room:
        return encoded
    body.update(value="", value_encoding="base64", truncated=True, value_bytes=len(value))
    keep = max(0, room - len(orjson.dumps(body))) // 4 * 3  # base64: 4 chars per 3 bytes
    body["value"] = base64.b64encode(value[:keep]).decode()
    return orjson.dumps(body)


BatchHandler = Callable[[Sequence[Record]], Awaitable[Sequence[DeadLetter]]]


@runtime_checkable
class TwoPhaseHandler(Protocol):
    """A handler split so the consumer can overlap work on consecutive batches.

    ``prepare`` is pure CPU (parsing, no I/O) and runs while the previous batch's
    ``apply`` waits on the database; ``apply`` does the batch's I/O (one transaction).
    Batches are still applied strictly one after another, in order.
    """

    def prepare(self, records: Sequence[Record]) -> Any: ...

    async def apply(self, prepared: Any) -> Sequence[DeadLetter]: ...


_GC_TUNED = False
# A batch of 5,000 records allocates some 10^5 short-lived containers (records, events,
# entries, rows), nearly all freed by reference counting. With the default thresholds
# (700, 10, 10) the cyclic collector ran every 700 of them and, every hundred of those,
# walked the whole heap: a fifth of the consumer's CPU in the donations benchmark.
GC_THRESHOLDS = (50_000, 20, 100)


def _tune_gc() -> None:
    """Once per process, before the first batch: what the process holds by now (modules,
    the app, pools) is long-lived, so it leaves the collector's generations
    (``gc.freeze``), and young collections run every ``GC_THRESHOLDS[0]`` allocations."""
    global _GC_TUNED
    if _GC_TUNED:
        return
    _GC_TUNED = True
    gc.collect()  # cyclic garbage of the start-up is freed, not frozen
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass
class _InFlight:
    task: asyncio.Task[list[DeadLetter]]
    records: list[Record]
    batches: dict[TopicPartition, list[Record]]
    started: float


class _WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets a rebalance take partitions away only after the batch in flight committed."""

    def __init__(self, consumer: BatchConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await self._consumer.drain()
        except Exception as exc:  # the new owner redelivers from the last commit
            log.warning("batch in flight failed during a rebalance", error=str(exc))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class BatchConsumer:
    """Consumes ``topic`` in batches with at-least-once delivery to an idempotent handler.

    A batch that fails with a transient error (database or broker down) is retried from
    the committed offsets with backoff; one that fails otherwise is split into single
    records so that only the poison ones go to ``<topic>.dlq`` and the rest commit.
    """

    def __init__(
        self,
        *,
        bootstrap: Kafka,
        topic: str,
        group_id: str,
        handler: BatchHandler | TwoPhaseHandler,
        producer: Producer,
        max_records: int = 2000,
        poll_timeout_ms: int = 200,
        max_poll_interval_ms: int = 300_000,
        partitions: int = 12,
        replication_factor: int = 1,
        min_insync: int = 1,
        handler_is_transient: ErrorCheck | None = None,
    ) -> None:
        """``handler_is_transient`` tells which of the handler's errors are transient too
        (e.g. ``shared.db.is_transient``): the batch is retried instead of split."""
        self.topic = topic
        self._handler_is_transient = handler_is_transient
        self._bootstrap = bootstrap
        self._partitions = partitions
        self._replication = {"replication_factor": replication_factor, "min_insync": min_insync}
        self.group_id = group_id
        self._prepare: Callable[[Sequence[Record]], Any]
        self._apply_prepared: Callable[[Any], Awaitable[Sequence[DeadLetter]]]
        if isinstance(handler, TwoPhaseHandler):
            self._prepare, self._apply_prepared = handler.prepare, handler.apply
        else:
            self._prepare, self._apply_prepared = list, handler
        self._inflight: _InFlight | None = None
        self._producer = producer
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer = AIOKafkaConsumer(
            **client_options(bootstrap),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            max_poll_interval_ms=max_poll_interval_ms,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.batches_done = 0
        self.records_done = 0

    def _is_transient(self, exc: BaseException) -> bool:
        check = self._handler_is_transient
        return is_transient(exc) or (check is not None and check(exc))

    async def start(self) -> None:
        # Subscribing to a topic that does not exist yet would leave the consumer idle until
        # its next metadata refresh (minutes): make sure it exists first.
        await ensure_topics(self._bootstrap, [self.topic], self._partitions, **self._replication)
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=_WaitForBatch(self))

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        """Runs until ``stop()``; call ``start()`` first and ``close()`` after.

        One batch is in flight at a time: while batch N is applied (its transaction waits
        on the database), batch N+1 is fetched and prepared; N+1 is applied only after
        N committed its offsets. A failure rewinds both to the first uncommitted offsets.
        """
        _tune_gc()
        backoff = 0.1
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=self._max_records
            )
            records = [r for part in batches.values() for r in part]
            failed = self._inflight
            prepared: Any = None
            prepare_error: Exception | None = None
            try:
                # CPU work on this batch while the one in flight waits on the database.
                prepared = self._prepare(records) if records else None
            except Exception as exc:
                prepare_error = exc
            try:
                await self.drain()
                failed = None
                if prepare_error is not None:
                    raise prepare_error
                backoff = 0.1
            except Exception as exc:
                log.warning(
                    "batch failed; retrying from committed offsets",
                    group=self.group_id,
                    records=len(failed.records) if failed else len(records),
                    error=f"{type(exc).__name__}: {exc}",
                    backoff_s=backoff,
                )
                self._rewind(failed.batches if failed else {}, batches)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if records:
                task = asyncio.create_task(self._apply(prepared, records))
                self._inflight = _InFlight(task, records, batches, time.perf_counter())
        try:
            await self.drain()
        except Exception as exc:  # stopping: the next start redelivers it
            log.warning("last batch failed at stop", group=self.group_id, error=str(exc))

    async def drain(self) -> None:
        """Waits for the batch in flight, dead-letters its poison and commits its offsets."""
        async with self._lock:
            inflight, self._inflight = self._inflight, None
            if inflight is None:
                return
            dead = await inflight.task
            if dead:
                await self._dead_letter(dead)
            await self._commit(inflight.batches)
        records = inflight.records
        BATCH_SIZE.labels(self.group_id).observe(len(records))
        BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - inflight.started)
        CONSUMED.labels(self.group_id, "ok").inc(len(records) - len(dead))
        self.batches_done += 1
        self.records_done += len(records)
        self._record_lag(inflight.batches)

    async def run_until_idle(self, idle_seconds: float = 1.0) -> None:
        """For benchmarks and tools: run until no record arrived for ``idle_seconds``."""
        watcher = asyncio.create_task(self._stop_when_idle(idle_seconds))
        try:
            await self.run()
        finally:
            watcher.cancel()

    async def _stop_when_idle(self, idle_seconds: float) -> None:
        last = self.records_done
        while True:
            await asyncio.sleep(idle_seconds)
            if self.records_done == last and self.records_done > 0:
                await self.stop()
                return
            last = self.records_done

    async def _apply(self, prepared: Any, records: list[Record]) -> list[DeadLetter]:
        try:
            return list(await self._apply_prepared(prepared))
        except Exception as exc:
            if self._is_transient(exc):
                raise
            log.warning(
                "batch failed on its data; isolating records",
                group=self.group_id,
                records=len(records),
                error=f"{type(exc).__name__}: {exc}",
            )
            return await self._isolate(records)

    async def _isolate(self, records: list[Record]) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        for record in records:
            try:
                dead += await self._apply_prepared(self._prepare([record]))
            except Exception as exc:
                if self._is_transient(exc):
                    raise
                dead.append(DeadLetter(record, f"processing failed: {type(exc).__name__}: {exc}"))
        return dead

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        futures = []
        for letter in dead:
            dlq = letter.record.topic + DLQ_SUFFIX
            futures.append(
                await self._producer.send(dlq, dead_letter_value(letter), key=letter.record.key)
            )
            DEAD_LETTERS.labels(dlq).inc()
            log.warning(
                "dead-lettered",
                topic=letter.record.topic,
                partition=letter.record.partition,
                offset=letter.record.offset,
                reason=letter.reason,
            )
        try:
            await asyncio.gather(*futures)
        except Exception as exc:
            await self._producer.recover(exc)
            raise
        CONSUMED.labels(self.group_id, "dead_letter").inc(len(dead))

    async def _commit(self, batches: dict[TopicPartition, list[Record]]) -> None:
        offsets = {tp: part[-1].offset + 1 for tp, part in batches.items() if part}
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced: another member now owns these partitions and will
            # redeliver from the last commit; the handler's idempotency absorbs it.
            log.warning("offset commit lost to a rebalance", group=self.group_id, error=str(exc))

    def _rewind(self, *batch_maps: dict[TopicPartition, list[Record]]) -> None:
        """getmany() already moved the position: go back to the first uncommitted record
        (the earliest of the given batches, oldest first, per partition)."""
        assigned = self._consumer.assignment()
        first: dict[TopicPartition, int] = {}
        for batches in batch_maps:
            for tp, part in batches.items():
                if part and tp not in first:
                    first[tp] = part[0].offset
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def _record_lag(self, batches: dict[TopicPartition, list[Record]]) -> None:
        for tp, part in batches.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None and part:
                lag = max(0, highwater - (part[-1].offset + 1))
                LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(lag)
