"""The consumer of ``donations.ledger``: parses ``donation.recorded`` records and folds
their entries into the totals, one transaction per consumed batch."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, ValidationError

from services.charities import repository
from services.charities.repository import EntryColumns
from shared.db import Pool
from shared.events import DONATION_RECORDED, DonationRecordedType, LedgerEntry, decode_envelope
from shared.kafka import DeadLetter, Record

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
LEDGER_DEAD_LETTERS = Counter(
    "gfg_charities_dead_letters_total", "Ledger messages sent to the dead-letter topic"
)


class _LedgerEvent(BaseModel):
    """Only what folding needs of a ``donation.recorded`` event: half the parsing cost of
    the full event model (the envelope is checked only when this fails)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: DonationRecordedType
    entry: LedgerEntry


@dataclass(frozen=True)
class LedgerBatch:
    entries: EntryColumns
    dead: list[DeadLetter]
    skipped: int  # events of other types
    duplicates: int  # the same entry twice in this batch


def parse_ledger(records: Sequence[Record]) -> LedgerBatch:
    """Splits a batch into ledger entries (first occurrence of each entry_id), dead letters
    (unparseable), and skipped events of other types."""
    seen: set[uuid.UUID] = set()
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    entry_id, project_id, seller_id, currency, is_accrual, amount, recorded_at = columns
    dead: list[DeadLetter] = []
    skipped = duplicates = 0
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
        if entry.entry_id in seen:
            duplicates += 1
            continue
        seen.add(entry.entry_id)
        entry_id.append(entry.entry_id)
        project_id.append(entry.project_id)
        seller_id.append(entry.seller_id)
        currency.append(entry.currency)
        is_accrual.append(entry.kind == "accrual")
        amount.append(entry.amount_minor)
        recorded_at.append(entry.recorded_at)
    return LedgerBatch(
        EntryColumns(entry_id, project_id, seller_id, currency, is_accrual, amount, recorded_at),
        dead,
        skipped,
        duplicates,
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
        LEDGER_DEAD_LETTERS.inc(len(parsed.dead))
        BATCHES_FOLDED.inc()
        return parsed.dead
