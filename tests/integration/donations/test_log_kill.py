"""kill -9 of the donations service while its sequencer is appending, then a restart: every
entry still gets exactly one leaf, the stored hashes are those shared.tlog computes, and
the checkpoints signed before and after the restart are consistent.

The service runs as a real process (as in the e2e tests) on a database and topics of its
own, with a signer key the test generates.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.donations.config import Settings
from shared.db import connect
from shared.tlog.checkpoint import Checkpoint
from shared.tlog.note import generate_key
from shared.tlog.proofs import check_tree
from tests.conftest import unique
from tests.e2e.conftest import start_service, wait_ready
from tests.integration.donations.log_support import (
    b64d,
    check_stored_log,
    delete_topics,
    drop_database,
    fresh_database,
    insert_entries,
    ledger_entries,
    served_checkpoint,
)
from tests.support import eventually, free_port

ROOT = Path(__file__).parents[3]
ORIGIN = "goods-for-good/donations"
ENTRIES = 40_000


@pytest.fixture
async def kill_db() -> AsyncIterator[tuple[Settings, asyncpg.Connection[Any]]]:
    base = Settings()
    settings = Settings(
        donations_db=f"{base.donations_db}_logkill",
        topic_prefix=f"{base.topic_prefix}{unique('logkill')}.",
    )
    await fresh_database(settings, settings.donations_db)
    conn = await connect(settings.dsn(settings.donations_db))
    try:
        yield settings, conn
    finally:
        await conn.close()
        await drop_database(settings, settings.donations_db)
        await delete_topics(settings)


async def _counts(db: asyncpg.Connection[Any]) -> tuple[int, int, int]:
    """(ledger entries, pending rows, tree size)."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM ledger_entry) AS e,"
        " (SELECT count(*) FROM log_pending) AS p, (SELECT size FROM log_tree) AS s"
    )
    assert row is not None
    return row["e"], row["p"], row["s"]


async def test_a_killed_sequencer_loses_and_duplicates_no_leaf(
    http: httpx.AsyncClient, kill_db: tuple[Settings, asyncpg.Connection[Any]]
) -> None:
    settings, db = kill_db
    skey, vkey = generate_key(ORIGIN)
    env = dict(
        os.environ,
        GFG_DONATIONS_DB=settings.donations_db,
        GFG_TOPIC_PREFIX=settings.topic_prefix,
        GFG_TOPIC_PARTITIONS="1",
        GFG_DONATIONS_LOG_KEY=skey,
        GFG_DONATIONS_LOG_ORIGIN=ORIGIN,
        GFG_DONATIONS_LOG_BATCH="500",
    )
    log_dir = ROOT / "test-artifacts" / "log-kill"
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_service("donations", port, env, log_dir)
    try:
        await wait_ready(url, process, "donations")
        assert (await http.get(f"{url}/v1/log/key")).text == vkey

        async def probe() -> int:
            return (await http.get(f"{url}/v1/log/checkpoint")).status_code

        await eventually(probe, lambda status: status == 200)
        empty = await served_checkpoint(http, url, ORIGIN)
        assert empty.size == 0

        # Entries land as the consumer writes them (one statement), then the kill comes
        # while the sequencer is working through them.
        await insert_entries(db, ledger_entries(ENTRIES, unique("seller"), unique("order")))
        await eventually(lambda: _counts(db), lambda c: c[2] > 0, interval=0.01)
        before: Checkpoint = await served_checkpoint(http, url, ORIGIN)
        assert 0 < before.size < ENTRIES
        process.kill()
        process.wait(timeout=30)
        entries, pending, size = await _counts(db)
        assert entries == ENTRIES
        assert pending > 0, "the sequencer had finished before the kill"
        assert size + pending == ENTRIES  # the killed batch rolled back as a whole

        process = start_service("donations", port, env, log_dir)
        await wait_ready(url, process, "donations")
        await eventually(lambda: _counts(db), lambda c: c == (ENTRIES, 0, ENTRIES), within=120)
        assert await check_stored_log(db) == ENTRIES

        more = 1_000
        await insert_entries(db, ledger_entries(more, unique("seller"), unique("order")))
        total = ENTRIES + more

        async def latest() -> Checkpoint:
            return await served_checkpoint(http, url, ORIGIN)

        after = await eventually(latest, lambda c: c.size == total)
        assert await check_stored_log(db) == total
        for old in (empty, before):
            response = await http.get(
                f"{url}/v1/log/consistency", params={"first": old.size, "second": after.size}
            )
            assert response.status_code == 200, response.text
            if old.size:
                proof = [b64d(h) for h in response.json()["proof"]]
                check_tree(proof, after.size, after.root_hash, old.size, old.root_hash)
    finally:
        process.kill()
        process.wait(timeout=30)
