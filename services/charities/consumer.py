"""The consumer of ``donations.ledger``: parses ``donation.recorded`` and ``donation.posted``
records, folds entries into the totals, keeps every entry for allocation and traces, and
applies postings, one transaction per consumed batch.

Entries of the kinds the totals know (``repository.FOLDED_KINDS``: the sellers' accruals
and reversals, the sponsors' matches and match reversals) are folded; an entry of another
kind is a newer producer's, so it is skipped and counted like an event of an unknown type,
never dead-lettered (a later version of this service may fold it from the retained log).

Tracing (shared/tracing.py): a record whose ``traceparent`` header is sampled gets a
``process`` span, from its parsing to the commit of its batch's transaction: the end of the
order's trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from prometheus_client import Counter

from services.charities import repository
from services.charities.repository import FOLDED_KINDS, LedgerRows, PostingColumns
from shared.db import Pool
from shared.events import (
    DONATION_POSTED,
    DONATION_RECORDED,
    DecodeError,
    DonationPosted,
    LedgerEntry,
    decode_envelope,
    ledger_event_decoder,
)
from shared.kafka import DeadLetter, Record
from shared.tracing import RecordSpans, header_traceparent

ENTRIES_FOLDED = Counter(
    "gfg_charities_entries_folded_total", "Ledger entries added to the totals (first delivery)"
)
ENTRIES_REDELIVERED = Counter(
    "gfg_charities_entries_redelivered_total",
    "Ledger entries seen again (already applied, or twice in one batch) and ignored",
)
POSTINGS_APPLIED = Counter(
    "gfg_charities_postings_applied_total", "Order postings applied (first delivery)"
)
BATCHES_FOLDED = Counter("gfg_charities_batches_folded_total", "Ledger batches folded")
EVENTS_SKIPPED = Counter(
    "gfg_charities_events_skipped_total", "Events of types this service does not consume"
)
ENTRIES_SKIPPED = Counter(
    "gfg_charities_entries_skipped_total", "Ledger entries of kinds the totals do not know"
)
LEDGER_DEAD_LETTERS = Counter(
    "gfg_charities_dead_letters_total", "Ledger messages sent to the dead-letter topic"
)


def _unknown_kind(raw: bytes) -> bool:
    """A ``donation.recorded`` whose entry is of a kind this service does not know (a newer
    producer's): skipped and counted, never a dead letter."""
    try:
        kind = orjson.loads(raw)["entry"]["kind"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(kind, str) and kind not in FOLDED_KINDS


@dataclass(frozen=True)
class LedgerBatch:
    rows: LedgerRows  # every entry of a known kind: kept (allocation, traces) and folded
    postings: PostingColumns
    dead: list[DeadLetter]
    skipped: int  # events of other types
    duplicates: int  # the same entry (or posting) twice in this batch
    unknown_kinds: int = 0  # entries of kinds the totals do not know
    spans: RecordSpans = field(default_factory=lambda: RecordSpans("process"))


def parse_ledger(records: Sequence[Record]) -> LedgerBatch:
    """Splits a batch into ledger entries (first occurrence of each entry_id), postings
    (first occurrence of each order), dead letters (unparseable), skipped events of other
    types and skipped entries of unknown kinds."""
    seen: set[uuid.UUID] = set()
    posted: set[str] = set()
    entries: list[LedgerEntry] = []
    postings: list[DonationPosted] = []
    dead: list[DeadLetter] = []
    skipped = duplicates = unknown_kinds = 0
    decode = ledger_event_decoder.decode
    spans = RecordSpans("process")
    for record in records:
        if record.headers:
            spans.follow(
                header_traceparent(record.headers),
                topic=record.topic,
                key=record.key,
                partition=record.partition,
                offset=record.offset,
            )
        raw = record.value
        if raw is None:
            dead.append(DeadLetter(record, "empty message value"))
            continue
        try:
            event = decode(raw)
        except DecodeError as exc:
            try:
                envelope, _ = decode_envelope(raw)
            except ValueError as env_exc:
                dead.append(DeadLetter(record, f"not an event: {_first_line(env_exc)}"))
                continue
            if envelope.type == DONATION_RECORDED and _unknown_kind(raw):
                unknown_kinds += 1
            elif envelope.type in (DONATION_RECORDED, DONATION_POSTED):
                dead.append(DeadLetter(record, f"invalid {envelope.type}: {_first_line(exc)}"))
            else:
                skipped += 1
            continue
        if isinstance(event, DonationPosted):
            if event.order_id in posted:
                duplicates += 1
            else:
                posted.add(event.order_id)
                postings.append(event)
            continue
        entry = event.entry
        if entry.entry_id in seen:
            duplicates += 1
            continue
        seen.add(entry.entry_id)
        entries.append(entry)
    return LedgerBatch(
        LedgerRows(
            [e.entry_id for e in entries],
            [e.order_id for e in entries],
            [e.project_id for e in entries],
            [e.seller_id for e in entries],
            [e.currency for e in entries],
            [e.kind for e in entries],
            [e.amount_minor for e in entries],
            [e.campaign_id for e in entries],
            [e.recorded_at for e in entries],
            [e.available_on for e in entries],
        ),
        PostingColumns(
            [p.order_id for p in postings],
            [p.project_id for p in postings],
            [p.seller_id for p in postings],
            [p.currency for p in postings],
            [p.posted_minor for p in postings],
            [p.posted_at for p in postings],
        ),
        dead,
        skipped,
        duplicates,
        unknown_kinds,
        spans,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[:3])[:500]


class LedgerFolder:
    """The BatchConsumer handler: parse (while the previous batch is written), then one
    set-based statement in one transaction."""

    def __init__(self, pool: Pool, on_folded: Callable[[], None] | None = None) -> None:
        """``on_folded`` runs after each batch that committed entries or postings (the
        service expires its totals cache there)."""
        self._pool = pool
        self._on_folded = on_folded

    def prepare(self, records: Sequence[Record]) -> LedgerBatch:
        return parse_ledger(records)

    async def apply(self, parsed: LedgerBatch) -> Sequence[DeadLetter]:
        try:
            dead = await self._apply(parsed)
        except BaseException as exc:
            parsed.spans.end(exc)
            raise
        parsed.spans.end()
        return dead

    async def _apply(self, parsed: LedgerBatch) -> Sequence[DeadLetter]:
        rows = parsed.rows
        applied = postings = 0
        if rows.entry_id or parsed.postings.order_id:
            async with self._pool.acquire() as conn, conn.transaction():
                if rows.entry_id:
                    applied = await repository.fold_entries(conn, rows)
                if parsed.postings.order_id:
                    # entries first: a posting in the same batch as its order's entries
                    # (same key, same partition, after them) must see them
                    await repository.bump_clock(conn)
                    postings = await repository.apply_postings(conn, parsed.postings)
            if self._on_folded is not None:
                self._on_folded()
        ENTRIES_FOLDED.inc(applied)
        POSTINGS_APPLIED.inc(postings)
        ENTRIES_REDELIVERED.inc(len(rows.entry_id) - applied + parsed.duplicates)
        EVENTS_SKIPPED.inc(parsed.skipped)
        ENTRIES_SKIPPED.inc(parsed.unknown_kinds)
        LEDGER_DEAD_LETTERS.inc(len(parsed.dead))
        BATCHES_FOLDED.inc()
        return parsed.dead
