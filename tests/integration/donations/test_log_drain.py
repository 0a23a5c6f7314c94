"""The sequencer's pipelined ``drain`` on real PostgreSQL: while one batch is appended on
the owning connection, the next is read on a second one. With small batches, records
enqueued twice (in consecutive batches too), pending rows of records that do not exist,
new records committed while it runs, and a read that fails while a batch is being
appended, every record ends with exactly one leaf, in the order of its first pending row,
and every stored checkpoint is the root of the leaves before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from shared.db import Conn
from shared.tlog.checkpoint import open_checkpoint
from shared.tlog.hashing import append_leaves, leaf_hashes, root_from_peaks, stored_hash_count
from shared.tlog.note import Signer, generate_key
from shared.tlog.sequencer import Sequencer
from tests.integration.donations.log_support import log_database

ORIGIN = "gfg.test/drain"
BATCH = 50

# A record table of the test's own, with the log's trigger as the services use it.
_RECORDS = """
CREATE TABLE rec (key text PRIMARY KEY, body text NOT NULL);
CREATE TRIGGER rec_log AFTER INSERT ON rec REFERENCING NEW TABLE AS new
FOR EACH STATEMENT EXECUTE FUNCTION log_enqueue('key');
"""


class RecLeaves:
    """Leaves of ``rec`` rows: one statement per call, as a service's source does. Fails
    once, on its call number ``fail_on``, when set."""

    table = "rec"

    def __init__(self) -> None:
        self.calls = 0
        self.fail_on: int | None = None

    async def leaves(self, conn: Conn, keys: Sequence[str]) -> dict[str, bytes]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("a read that fails")
        rows = await conn.fetch("SELECT key, body FROM rec WHERE key = ANY($1::text[])", keys)
        return {r["key"]: f"{r['key']}={r['body']}".encode() for r in rows}


@pytest.fixture
async def log_dsn() -> AsyncIterator[str]:
    async with log_database("drain", _RECORDS) as dsn:
        yield dsn


async def _insert(db: asyncpg.Connection[Any], start: int, stop: int) -> None:
    """Records ``start`` to ``stop - 1``, in key order, in one statement."""
    await db.execute(
        "INSERT INTO rec (key, body) SELECT 'r' || lpad(n::text, 5, '0'), 'body ' || n"
        " FROM generate_series($1::int, $2::int - 1) AS n ORDER BY n",
        start,
        stop,
    )


async def _check(db: asyncpg.Connection[Any], signer: Signer) -> list[str]:
    """Asserts the stored log is what its leaves give; returns the leaves' record keys."""
    leaves = await db.fetch("SELECT leaf_index, record_key, leaf FROM log_leaf ORDER BY 1")
    size = len(leaves)
    assert [r["leaf_index"] for r in leaves] == list(range(size))
    keys = [r["record_key"] for r in leaves]
    assert len(set(keys)) == size, "a record has two leaves"
    expected, peaks = append_leaves(0, [], leaf_hashes(bytes(r["leaf"]) for r in leaves))
    stored = [
        bytes(r["hash"]) for r in await db.fetch("SELECT hash FROM log_hash ORDER BY hash_index")
    ]
    assert len(stored) == stored_hash_count(size)
    assert stored == expected
    assert await db.fetchval("SELECT size FROM log_tree") == size
    # Every checkpoint stored is of a prefix of these leaves, and verifies.
    prefix_roots = {}
    hashes = leaf_hashes(bytes(r["leaf"]) for r in leaves)
    grown: list[bytes] = []
    for n, h in enumerate(hashes):
        _, grown = append_leaves(n, grown, [h])
        prefix_roots[n + 1] = root_from_peaks(grown)
    checkpoints = await db.fetch("SELECT size, root_hash, note FROM log_checkpoint ORDER BY 1")
    assert checkpoints
    assert checkpoints[-1]["size"] == size
    for c in checkpoints:
        if c["size"]:
            assert bytes(c["root_hash"]) == prefix_roots[c["size"]]
        opened = open_checkpoint(bytes(c["note"]), ORIGIN, [signer.verifier()])
        assert (opened.size, opened.root_hash) == (c["size"], bytes(c["root_hash"]))
    return keys


async def test_drain_appends_every_record_once_in_pending_order(log_dsn: str) -> None:
    signer = Signer.from_key(generate_key(ORIGIN)[0])
    source = RecLeaves()
    sequencer = Sequencer(
        origin=ORIGIN, dsn=log_dsn, signer=signer, sources=[source], batch_size=BATCH
    )
    db: asyncpg.Connection[Any] = await asyncpg.connect(log_dsn)
    try:
        await _insert(db, 0, 1_000)
        # Enqueued twice: 30 records again at once (their second rows land in later
        # batches), and each record of a batch-sized window again right after it, so
        # that the second row is read while the first one's batch is being appended.
        await db.execute(
            "INSERT INTO log_pending (record_table, record_key)"
            " SELECT 'rec', 'r' || lpad(n::text, 5, '0') FROM generate_series(0, 29) AS n"
        )
        await _insert(db, 1_000, 1_050)
        await db.execute(
            "INSERT INTO log_pending (record_table, record_key)"
            " SELECT 'rec', 'r' || lpad(n::text, 5, '0') FROM generate_series(1000, 1049) AS n"
        )
        # Rows of records that do not exist are dropped.
        await db.execute(
            "INSERT INTO log_pending (record_table, record_key) VALUES ('rec', 'nobody')"
        )
        assert await sequencer.claim()

        async def more() -> None:  # records committed while the drain runs
            for start in range(1_050, 1_450, 40):
                await _insert(db, start, start + 40)
                await asyncio.sleep(0.01)

        writer = asyncio.create_task(more())
        appended = 0
        while not writer.done():
            appended += await sequencer.drain()
        await writer
        while n := await sequencer.drain():
            appended += n

        assert appended == 1_450
        assert await db.fetchval("SELECT count(*) FROM log_pending") == 0
        # One leaf per record, in the order of each record's first pending row: the
        # records were inserted in key order, and the second rows moved nothing.
        assert await _check(db, signer) == [f"r{n:05d}" for n in range(1_450)]
    finally:
        await sequencer.close()
        await db.close()


async def test_a_read_that_fails_mid_append_loses_and_duplicates_nothing(log_dsn: str) -> None:
    signer = Signer.from_key(generate_key(ORIGIN)[0])
    source = RecLeaves()
    source.fail_on = 3  # batch 3 is read while batch 2 is being appended
    sequencer = Sequencer(
        origin=ORIGIN, dsn=log_dsn, signer=signer, sources=[source], batch_size=BATCH
    )
    db: asyncpg.Connection[Any] = await asyncpg.connect(log_dsn)
    try:
        await _insert(db, 0, 400)
        assert await sequencer.claim()
        with pytest.raises(RuntimeError, match="a read that fails"):
            await sequencer.drain()
        # The batch being appended when the read failed was committed, nothing after it.
        assert await db.fetchval("SELECT size FROM log_tree") == 2 * BATCH
        assert await db.fetchval("SELECT count(*) FROM log_pending") == 400 - 2 * BATCH
        while await sequencer.drain():
            pass
        keys = await _check(db, signer)
        assert keys == [f"r{n:05d}" for n in range(400)]
    finally:
        await sequencer.close()
        await db.close()
