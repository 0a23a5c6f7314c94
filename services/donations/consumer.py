"""The consumer of ``orders.lifecycle``: order events in, ledger entries (and their
``donation.recorded`` events) out.

Delivery: at least once, recorded exactly once. ``shared.kafka.BatchConsumer`` hands a
batch to ``LedgerHandler.handle``, which writes everything the batch produces in ONE
database transaction: the ledger entries and, through this service's outbox, one
``donation.recorded`` per new entry. Offsets are committed to Kafka only after that
transaction has committed. A crash between the two redelivers the batch; every entry has
a unique key per (order_id, event key) (``accrual``, ``refund:<refund_id>``) and is
inserted with ``ON CONFLICT DO NOTHING``, so the redelivered batch records nothing twice
and, since only rows actually inserted are put in the outbox, publishes nothing twice.

Per batch the database sees at most ten statements whatever the batch size: the rule
histories of its sellers, a lock on the batch's refunded orders' pending postings and
their ledger state (only when the batch has refunds), the lock on the campaigns of its
projects, the entries (four: a staging table, COPY into it, one insert from it in which
new accruals also join ``posting_due``, its drop), the outbox rows, and the partitions'
positions; and when a campaign matches, six more: what refunded orders' matches have
left, the match entries (four again), one update of the touched campaigns'
``matched_minor`` (services/donations/matching.py says why the budget is never
exceeded). Matches follow the return window by construction: only a reversal this batch
recorded is matched by a match reversal, and a refund after ``available_on`` or after
the posting records none.

The positions (``consumer_position``: per partition the next offset to apply and the
latest ``occurred_at`` applied) are written in the batch's transaction, so they never
claim more than the ledger holds; the posting job (posting.py) reads them to know that no
refund can still be on its way for an order it posts.
Messages that cannot be parsed are returned as dead letters (to ``orders.lifecycle.dlq``)
and the rest of the batch, and of the partition, goes on.

Tracing (shared/tracing.py): an event's ``traceparent`` header is continued by a
``process`` span when it is sampled (started while the batch is parsed, ended when its
transaction is done) and stored with the outbox rows of the entries the event produced, so
the ``donation.recorded`` events travel on in the order's trace.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from prometheus_client import Counter as PromCounter

from services.donations import repository
from services.donations.config import Settings
from services.donations.ledger import BatchPlan, NewEntry, OrderMoneyEvent, plan_batch
from services.donations.matching import Campaign, plan_matches
from services.donations.repository import Position
from services.donations.rules import DEFAULT_RETURN_WINDOW
from shared import db
from shared.db import Conn, Pool
from shared.events import (
    DONATION_RECORDED,
    ORDER_EVENT_TYPES,
    SCHEMA_VERSION,
    TOPIC_LEDGER,
    TOPIC_ORDERS,
    DecodeError,
    OrderCancelled,
    OrderCompleted,
    OrderRefunded,
    decode_envelope,
    new_event_ids,
    order_event_decoder,
)
from shared.kafka import BatchConsumer, DeadLetter, KafkaAccess, Producer, Record
from shared.outbox import OutboxMessage, enqueue
from shared.tracing import RecordSpans, header_traceparent

EVENTS = PromCounter(
    "gfg_donations_events_total",
    "Order events consumed by the donations service, by type and outcome",
    ["type", "outcome"],
)
CURRENCY_MISMATCH = PromCounter(
    "gfg_donations_currency_mismatch_total",
    "Completed orders whose currency differs from the rule's project: no donation",
)
DONATED = PromCounter(
    "gfg_donations_amount_minor_total",
    "Amounts recorded in the ledger, in minor units, by currency and kind",
    ["currency", "kind"],
)
FINAL_REFUNDS = PromCounter(
    "gfg_donations_refunds_after_window_total",
    "Refunds that reversed nothing because the donation was final: made after the order's "
    "available_on (reason after_window), or arriving after its posting (after_posting)",
    ["reason"],
)


def group_id(settings: Settings) -> str:
    return settings.topic_prefix + "donations"


@dataclass
class OrderEventBatch:
    """A consumed batch after parsing: dead letters, events to apply, skipped tallies."""

    dead: list[DeadLetter] = field(default_factory=list)
    events: list[OrderMoneyEvent] = field(default_factory=list)
    tally: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (topic, partition) -> how far this batch goes on it
    positions: dict[tuple[str, int], Position] = field(default_factory=dict)
    # order_id -> the partition its events are on
    partitions: dict[str, int] = field(default_factory=dict)
    # event_id -> the trace context its entries' outbox rows carry on
    contexts: dict[uuid.UUID, str] = field(default_factory=dict)
    spans: RecordSpans = field(default_factory=lambda: RecordSpans("process"))


class LedgerHandler:
    """The batch handler; usable without a consumer (tests run it directly)."""

    def __init__(
        self, pool: Pool, ledger_topic: str, *, window: timedelta = DEFAULT_RETURN_WINDOW
    ) -> None:
        self._pool = pool
        self._ledger_topic = ledger_topic
        self._window = window
        self.entries_recorded = 0

    async def handle(self, records: Sequence[Record]) -> list[DeadLetter]:
        """Both phases at once (tests and tools call it directly)."""
        return await self.apply(self.prepare(records))

    def prepare(self, records: Sequence[Record]) -> OrderEventBatch:
        """Parsing only (no I/O): runs while the previous batch is still being written."""
        batch = OrderEventBatch()
        positions = batch.positions
        follow = batch.spans.follow
        for record in records:
            parsed = _parse(record)
            occurred_at: datetime | None = None
            if isinstance(parsed, DeadLetter):
                batch.dead.append(parsed)
                batch.tally[("unknown", "dead_letter")] += 1
            elif isinstance(parsed, tuple):
                batch.tally[parsed[:2]] += 1
                occurred_at = parsed[2]
            else:
                batch.events.append(parsed)
                occurred_at = parsed.occurred_at
                if isinstance(parsed, OrderCompleted):
                    batch.partitions[parsed.order.order_id] = record.partition
                if record.headers:
                    context = follow(
                        header_traceparent(record.headers),
                        topic=record.topic,
                        key=record.key,
                        partition=record.partition,
                        offset=record.offset,
                    )
                    if context is not None:
                        batch.contexts[parsed.event_id] = context
            tp = (record.topic, record.partition)
            known = positions.get(tp)
            latest = known.max_occurred_at if known is not None else None
            if occurred_at is not None and (latest is None or occurred_at > latest):
                latest = occurred_at
            positions[tp] = Position(record.offset + 1, latest)
        return batch

    async def apply(self, batch: OrderEventBatch) -> list[DeadLetter]:
        """The batch's one transaction: rules, prior ledger, entries, outbox."""
        try:
            dead = await self._apply(batch)
        except BaseException as exc:
            batch.spans.end(exc)
            raise
        batch.spans.end()
        return dead

    async def _apply(self, batch: OrderEventBatch) -> list[DeadLetter]:
        dead, events, tally = batch.dead, batch.events, batch.tally
        plan_outcomes: Counter[tuple[str, str]] = Counter()
        recorded: list[NewEntry] = []
        if events:
            sellers = {_seller(e) for e in events}
            # Only a refund needs what an order accrued before; a completed order already
            # recorded is caught by the unique key, and within the batch by plan_batch.
            refunded = {e.order_id for e in events if isinstance(e, OrderRefunded)}
            async with self._pool.acquire() as conn, conn.transaction():
                histories = await repository.rule_histories(conn, sellers)
                ledgers = {}
                if refunded:
                    await repository.lock_due_postings(conn, refunded)
                    ledgers = await repository.order_ledgers(conn, refunded)
                plan = plan_batch(events, histories, ledgers, window=self._window)
                recorded_at = datetime.now(UTC)
                campaigns = await self._lock_campaigns(conn, plan.entries)
                inserted = await repository.insert_entries(
                    conn, plan.entries, recorded_at, batch.partitions
                )
                recorded = [e for e in plan.entries if e.entry_id in inserted]
                if campaigns and recorded:
                    recorded += await self._match(conn, plan, recorded, campaigns, recorded_at)
                await enqueue(conn, self._messages(recorded, recorded_at, batch.contexts))
                await self._advance(conn, batch)
            plan_outcomes = plan.outcomes
            self.entries_recorded += len(recorded)
            if len(recorded) < len(plan.entries):  # recorded by an earlier delivery
                plan_outcomes[("entries", "already_recorded")] += len(plan.entries) - len(recorded)
        elif batch.positions:
            async with self._pool.acquire() as conn, conn.transaction():
                await self._advance(conn, batch)
        _count(tally + plan_outcomes, recorded)
        return dead

    @staticmethod
    async def _lock_campaigns(conn: Conn, entries: Sequence[NewEntry]) -> list[Campaign]:
        """The campaigns of the projects the batch may touch, locked BEFORE any entry is
        written (see services/donations/matching.py for why the budget holds)."""
        projects = {e.project_id for e in entries}
        return await repository.lock_project_campaigns(conn, projects) if projects else []

    @staticmethod
    async def _match(
        conn: Conn,
        plan: BatchPlan,
        recorded: Sequence[NewEntry],
        campaigns: Sequence[Campaign],
        recorded_at: datetime,
    ) -> list[NewEntry]:
        """Match entries for the seller entries this batch actually inserted; moves each
        touched campaign's matched_minor once, by what was inserted."""
        reversed_orders = {e.order_id for e in recorded if e.kind == "reversal"}
        prior = await repository.order_matches(conn, reversed_orders) if reversed_orders else {}
        matched = plan_matches(
            recorded, plan.accruals, plan.net_before, campaigns, prior, plan.full_refunds
        )
        if not matched.entries:
            return []
        inserted = await repository.insert_entries(conn, matched.entries, recorded_at)
        entries = [e for e in matched.entries if e.entry_id in inserted]
        deltas: dict[str, int] = {}
        for e in entries:
            assert e.campaign_id is not None
            sign = 1 if e.kind == "match" else -1
            deltas[e.campaign_id] = deltas.get(e.campaign_id, 0) + sign * e.amount_minor
        await repository.add_matched(conn, {k: v for k, v in deltas.items() if v})
        return entries

    @staticmethod
    async def _advance(conn: Conn, batch: OrderEventBatch) -> None:
        by_topic: dict[str, dict[int, Position]] = {}
        for (topic, partition), position in batch.positions.items():
            by_topic.setdefault(topic, {})[partition] = position
        for topic, positions in by_topic.items():  # one topic in practice
            await repository.advance_positions(conn, topic, positions)

    def _messages(
        self,
        entries: Sequence[NewEntry],
        recorded_at: datetime,
        contexts: dict[uuid.UUID, str] | None = None,
    ) -> list[OutboxMessage]:
        """One ``donation.recorded`` (shared.events.DonationRecorded) per entry, under the
        trace context of the event it came from (``contexts``: event_id -> traceparent).

        Serialised straight from a dict (no event struct built per entry, on the consumer's
        hot path); the unit tests check that the payload parses back as a DonationRecorded
        with the entry's values.
        """
        at = recorded_at.isoformat()
        dumps = orjson.dumps
        topic = self._ledger_topic
        context = (contexts or {}).get
        messages = []
        for event_id, e in zip(new_event_ids(len(entries)), entries, strict=True):
            payload = dumps(
                {
                    "event_id": event_id,
                    "type": DONATION_RECORDED,
                    "schema_version": SCHEMA_VERSION,
                    "occurred_at": at,
                    "entry": {
                        "entry_id": e.entry_id,
                        "order_id": e.order_id,
                        "seller_id": e.seller_id,
                        "project_id": str(e.project_id),
                        "kind": e.kind,
                        "amount_minor": e.amount_minor,
                        "currency": e.currency,
                        "rule_version": e.rule_version,
                        "campaign_id": e.campaign_id,
                        "recorded_at": at,
                        "available_on": e.available_on,
                    },
                }
            )
            messages.append(
                OutboxMessage(
                    topic, "order", e.order_id, DONATION_RECORDED, payload, context(e.event_id)
                )
            )
        return messages


def _parse(
    record: Record,
) -> OrderMoneyEvent | tuple[str, str, datetime | None] | DeadLetter:
    """An event to apply, the (type, outcome, occurred_at) of one to skip, or a dead
    letter."""
    raw: bytes | None = record.value
    if not raw:
        return DeadLetter(record, "empty message")
    try:
        event = order_event_decoder.decode(raw)
    except DecodeError as exc:
        invalid = exc
    else:
        if isinstance(event, OrderCancelled):  # a cancelled order never donated
            return (event.type, "ignored", event.occurred_at)
        return event
    # Not a valid known event: an event of another type is skipped, anything else is poison.
    try:
        envelope, _ = decode_envelope(raw)
    except ValueError as exc:  # malformed JSON, not an object, or no valid envelope
        return DeadLetter(record, f"not an event: {_short(exc)}")
    if envelope.type in ORDER_EVENT_TYPES:
        return DeadLetter(record, f"invalid {envelope.type}: {_short(invalid)}")
    return (envelope.type, "skipped", envelope.occurred_at)


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text[:500]


def _seller(event: OrderMoneyEvent) -> str:
    return event.order.seller_id if isinstance(event, OrderCompleted) else event.seller_id


def _count(outcomes: Counter[tuple[str, str]], recorded: Sequence[NewEntry]) -> None:
    for (event_type, outcome), n in outcomes.items():
        EVENTS.labels(event_type, outcome).inc(n)
        if outcome == "currency_mismatch":
            CURRENCY_MISMATCH.inc(n)
        elif outcome in ("after_window", "after_posting"):
            FINAL_REFUNDS.labels(outcome).inc(n)
    amounts: Counter[tuple[str, str]] = Counter()
    for entry in recorded:
        amounts[(entry.currency, entry.kind)] += entry.amount_minor
    for (currency, kind), amount in amounts.items():
        DONATED.labels(currency, kind).inc(amount)


def build_consumer(settings: Settings, pool: Pool, producer: Producer) -> BatchConsumer:
    handler = LedgerHandler(
        pool, settings.topic(TOPIC_LEDGER), window=timedelta(seconds=settings.return_window_s)
    )
    return BatchConsumer(
        bootstrap=KafkaAccess.from_settings(settings),
        topic=settings.topic(TOPIC_ORDERS),
        group_id=group_id(settings),
        handler=handler,
        producer=producer,
        max_records=settings.consumer_max_records,
        replication_factor=settings.kafka_replication_factor,
        min_insync=settings.kafka_min_insync,
        handler_is_transient=db.is_transient,
    )
