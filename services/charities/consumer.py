"""The consumer of ``donations.ledger``: parses ``donation.recorded`` records and folds
their entries into the totals, one transaction per consumed batch.

Entries of the kinds the totals know (``repository.FOLDED_KINDS``: the sellers' accruals
and reversals, the sponsors' matches and match reversals) are folded; an entry of another
kind is a newer producer's, so it is skipped and counted like an event of an unknown type,
never dead-lettered (a later version of this service may fold it from the retained log).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, ValidationError

from services.charities import repository
from services.charities.repository import FOLDED_KINDS, EntryColumns
from shared.db import Pool
from shared.events import DONATION_RECORDED, DonationRecordedType, decode_envelope
from shared.kafka import DeadLetter, Record
from shared.money import Currency, MinorAmount

ENTRIES_FOLDED = Counter(
    "gfg_charities_entries_folded_total", "Ledger entries added to the totals (first delivery)"
)
ENTRIES_REDELIVERED = Counter(
    "gfg_charities_entries_redelivered_total",
    "Ledger entries seen again (already applied, or twice in one batch) and ignored",
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


class _FoldedEntry(BaseModel):
    """The fields of a ledger entry that folding reads. ``kind`` is any string here (an
    unknown kind is skipped, not invalid); ``rule_version`` (null for matches) and
    ``campaign_id`` do not enter the totals."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    entry_id: uuid.UUID
    seller_id: str
    project_id: uuid.UUID
    kind: str
    amount_minor: MinorAmount
    currency: Currency
    recorded_at: datetime


class _LedgerEvent(BaseModel):
    """Only what folding needs of a ``donation.recorded`` event: half the parsing cost of
    the full event model (the envelope is checked only when this fails)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: DonationRecordedType
    entry: _FoldedEntry


@dataclass(frozen=True)
class LedgerBatch:
    entries: EntryColumns
    dead: list[DeadLetter]
    skipped: int  # events of other types
    duplicates: int  # the same entry twice in this batch
    unknown_kinds: int = 0  # entries of kinds the totals do not know


def parse_ledger(records: Sequence[Record]) -> LedgerBatch:
    """Splits a batch into ledger entries (first occurrence of each entry_id), dead letters
    (unparseable), skipped events of other types and skipped entries of unknown kinds."""
    seen: set[uuid.UUID] = set()
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    entry_id, project_id, seller_id, currency, kind, amount, recorded_at = columns
    dead: list[DeadLetter] = []
    skipped = duplicates = unknown_kinds = 0
    for record in records:
        raw = record.value
        if raw is None:
            dead.append(DeadLetter(record, "empty message value"))
            continue
        try:
            entry = _LedgerEvent.model_validate_json(raw).entry
        except ValidationError as exc:
            try:
                envelope, _ = decode_envelope(raw)
            except (ValueError, ValidationError) as env_exc:
                dead.append(DeadLetter(record, f"not an event: {_first_line(env_exc)}"))
                continue
            if envelope.type != DONATION_RECORDED:
                skipped += 1
                continue
            dead.append(DeadLetter(record, f"invalid {DONATION_RECORDED}: {_first_line(exc)}"))
            continue
        if entry.kind not in FOLDED_KINDS:
            unknown_kinds += 1
            continue
        if entry.entry_id in seen:
            duplicates += 1
            continue
        seen.add(entry.entry_id)
        entry_id.append(entry.entry_id)
        project_id.append(entry.project_id)
        seller_id.append(entry.seller_id)
        currency.append(entry.currency)
        kind.append(entry.kind)
        amount.append(entry.amount_minor)
        recorded_at.append(entry.recorded_at)
    return LedgerBatch(
        EntryColumns(entry_id, project_id, seller_id, currency, kind, amount, recorded_at),
        dead,
        skipped,
        duplicates,
        unknown_kinds,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[:3])[:500]


class LedgerFolder:
    """The BatchConsumer handler: parse (while the previous batch is written), then one
    set-based statement in one transaction."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def prepare(self, records: Sequence[Record]) -> LedgerBatch:
        return parse_ledger(records)

    async def apply(self, parsed: LedgerBatch) -> Sequence[DeadLetter]:
        entries = parsed.entries
        applied = 0
        if entries.entry_id:
            async with self._pool.acquire() as conn, conn.transaction():
                applied = await repository.fold_entries(conn, entries)
        ENTRIES_FOLDED.inc(applied)
        ENTRIES_REDELIVERED.inc(len(entries.entry_id) - applied + parsed.duplicates)
        EVENTS_SKIPPED.inc(parsed.skipped)
        ENTRIES_SKIPPED.inc(parsed.unknown_kinds)
        LEDGER_DEAD_LETTERS.inc(len(parsed.dead))
        BATCHES_FOLDED.inc()
        return parsed.dead
