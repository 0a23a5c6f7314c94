"""``log.append_leaves_per_s``: the donations log's sequencer draining pre-recorded entries.

Ledger entries are inserted first with the consumer's own statement (its trigger queues
one pending row each), then the clock runs while the sequencer appends them: per batch,
read the pending rows, build the leaves (entry rows and order salts), compute the stored
hashes, COPY leaves and hashes, delete the pending rows, sign and store a checkpoint.
Runs on a fresh database ``<GFG_DONATIONS_DB>_logbench``, dropped afterwards.

    python -m tools.bench log
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.donations import repository
from services.donations.app import MIGRATIONS
from services.donations.config import Settings
from services.donations.ledger import NewEntry
from services.donations.log import LEAF_SOURCES
from shared.migrations import migrate
from shared.tlog.hashing import stored_hash_count
from shared.tlog.note import Signer, generate_key
from shared.tlog.sequencer import Sequencer
from tools.bench import Figure

ENTRIES = 100_000
INSERT_CHUNK = 10_000
BATCH = 5_000


def _settings() -> Settings:
    return Settings(
        jwt_secret=os.environ.get("GFG_JWT_SECRET", "bench-secret-not-for-production-0123456789"),
        log_level="WARNING",
    )


async def _recreate(settings: Settings, name: str, *, create: bool = True) -> None:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(settings.dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


AVAILABLE_ON = datetime(2100, 1, 1, tzinfo=UTC)  # accruals only; never due here


def _entries(start: int, count: int) -> list[NewEntry]:
    projects = [uuid.UUID(int=n + 1) for n in range(50)]
    return [
        NewEntry(
            entry_id=str(uuid.uuid4()),
            order_id=f"bench-order-{n // 2}",  # two entries per order, as with refunds
            event_key="accrual" if n % 2 == 0 else "refund:r1",
            seller_id=f"bench-seller-{n % 1000}",
            project_id=projects[n % 50],
            kind="accrual" if n % 2 == 0 else "reversal",
            amount_minor=100 + n % 5000,
            currency="CNY",
            rule_version=1,
            event_id=uuid.uuid4(),
            available_on=AVAILABLE_ON if n % 2 == 0 else None,
        )
        for n in range(start, start + count)
    ]


async def run() -> list[Figure]:
    settings = _settings()
    database = f"{settings.donations_db}_logbench"
    dsn = settings.dsn(database)
    await _recreate(settings, database)
    try:
        await migrate(dsn, MIGRATIONS)
        conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
        try:
            for start in range(0, ENTRIES, INSERT_CHUNK):
                async with conn.transaction():
                    await repository.insert_entries(
                        conn, _entries(start, INSERT_CHUNK), datetime.now(UTC)
                    )
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
        origin = settings.donations_log_origin
        sequencer = Sequencer(
            origin=origin,
            dsn=dsn,
            signer=Signer.from_key(generate_key(origin)[0]),
            sources=LEAF_SOURCES,
            batch_size=BATCH,
        )
        try:
            if not await sequencer.claim():
                raise RuntimeError("another sequencer holds the bench log")
            started = time.perf_counter()
            while await sequencer.sequence_once():
                pass
            elapsed = time.perf_counter() - started
        finally:
            await sequencer.close()
        conn = await asyncpg.connect(dsn)
        try:
            size = await conn.fetchval("SELECT size FROM log_tree")
            hashes = await conn.fetchval("SELECT count(*) FROM log_hash")
        finally:
            await conn.close()
        if size != ENTRIES or hashes != stored_hash_count(ENTRIES):
            raise AssertionError(f"log has {size} leaves and {hashes} hashes")
        return [Figure("log.append_leaves_per_s", ENTRIES / elapsed, "leaves/s")]
    finally:
        await _recreate(settings, database, create=False)
