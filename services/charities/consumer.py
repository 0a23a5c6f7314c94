"""Folds ``donations.ledger`` into the totals, one transaction per consumed batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from prometheus_client import Counter

from services.charities import repository
from services.charities.service import ParsedBatch, parse_ledger
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


class LedgerFolder:
    """The BatchConsumer handler: parse (while the previous batch is written), then one
    set-based statement in one transaction."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def __call__(self, records: Sequence[Record]) -> Sequence[DeadLetter]:
        return await self.apply(self.prepare(records))

    def prepare(self, records: Sequence[Record]) -> ParsedBatch:
        return parse_ledger(records)

    async def apply(self, parsed: ParsedBatch) -> Sequence[DeadLetter]:
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
