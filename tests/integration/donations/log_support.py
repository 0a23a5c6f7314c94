"""Helpers of the transparency-log tests: a fresh database, checks of the stored log
recomputed with shared.tlog, and verification of what the endpoints serve."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient

from services.donations import repository
from services.donations.config import Settings
from services.donations.ledger import NewEntry
from shared.events import DLQ_SUFFIX, TOPICS
from shared.settings import CommonSettings
from shared.tlog import store
from shared.tlog.checkpoint import Checkpoint, open_checkpoint
from shared.tlog.hashing import append_leaves, leaf_hashes, root_from_peaks, stored_hash_count
from shared.tlog.note import Verifier


async def fresh_database(settings: CommonSettings, name: str) -> None:
    """Drops ``name`` (if a previous run left it) and creates it empty."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(settings.dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(settings: CommonSettings, name: str) -> None:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(settings.dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def log_database(suffix: str, *ddl: str) -> AsyncIterator[str]:
    """A fresh database ``<donations_db>_<suffix>`` holding the log's tables
    (``shared.tlog.store.SCHEMA``) and ``ddl``; yields its DSN, drops it after."""
    base = Settings()
    name = f"{base.donations_db}_{suffix}"
    await fresh_database(base, name)
    dsn = base.dsn(name)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
    try:
        for statement in (store.SCHEMA, *ddl):
            await conn.execute(statement)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        await drop_database(base, name)


async def delete_topics(settings: CommonSettings) -> None:
    """Deletes the service topics (and dead-letter topics) of a test's own prefix."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        topics = [settings.topic(t) for t in TOPICS]
        existing = set(await admin.list_topics())
        doomed = [t for t in topics + [t + DLQ_SUFFIX for t in topics] if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def check_stored_log(db: asyncpg.Connection[Any]) -> int:
    """Asserts the stored log is exactly what shared.tlog computes from its leaves: one
    leaf per ledger entry and per record key, dense indexes, every stored hash, the size
    and the latest checkpoint's root. Returns the size."""
    leaves = await db.fetch(
        "SELECT leaf_index, record_table, record_key, leaf FROM log_leaf ORDER BY leaf_index"
    )
    size = len(leaves)
    assert [r["leaf_index"] for r in leaves] == list(range(size))
    keys = [(r["record_table"], r["record_key"]) for r in leaves]
    assert len(set(keys)) == size, "a record has two leaves"
    entries = await db.fetch("SELECT seq::text AS key FROM ledger_entry")
    assert sorted(k for t, k in keys if t == "ledger_entry") == sorted(r["key"] for r in entries)
    assert await db.fetchval("SELECT size FROM log_tree") == size
    expected, peaks = append_leaves(0, [], leaf_hashes(bytes(r["leaf"]) for r in leaves))
    stored = await db.fetch("SELECT hash_index, hash FROM log_hash ORDER BY hash_index")
    assert len(expected) == stored_hash_count(size)
    assert [r["hash_index"] for r in stored] == list(range(len(expected)))
    assert [bytes(r["hash"]) for r in stored] == expected
    latest = await db.fetchrow("SELECT size, root_hash FROM log_checkpoint ORDER BY size DESC")
    assert latest is not None
    assert latest["size"] == size
    assert bytes(latest["root_hash"]) == root_from_peaks(peaks)
    return size


async def served_checkpoint(
    http: httpx.AsyncClient, url: str, origin: str = "goods-for-good/donations"
) -> Checkpoint:
    """The served checkpoint, its signature verified with the served key."""
    key = await http.get(f"{url}/v1/log/key")
    assert key.status_code == 200, key.text
    assert key.headers["content-type"].startswith("text/plain")
    response = await http.get(f"{url}/v1/log/checkpoint")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return open_checkpoint(response.content, origin, [Verifier.from_key(key.text)])


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def ledger_entries(count: int, seller_id: str, tag: str) -> list[NewEntry]:
    """``count`` accruals of distinct orders, as the consumer would insert them."""
    project = uuid.uuid4()
    return [
        NewEntry(
            entry_id=str(uuid.uuid4()),
            order_id=f"{tag}-{n}",
            event_key="accrual",
            seller_id=seller_id,
            project_id=project,
            kind="accrual",
            amount_minor=100 + n,
            currency="CNY",
            rule_version=1,
            event_id=uuid.uuid4(),
            available_on=datetime.now(UTC) + timedelta(days=7),
        )
        for n in range(count)
    ]


async def insert_entries(db: asyncpg.Connection[Any], entries: list[NewEntry]) -> None:
    """The consumer's own insert (its trigger queues the log's pending rows)."""
    async with db.transaction():
        inserted = await repository.insert_entries(db, entries, datetime.now(UTC))
    assert len(inserted) == len(entries)
