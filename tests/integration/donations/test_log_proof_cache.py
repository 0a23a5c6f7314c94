"""The proof read path's block cache against stored hashes in real PostgreSQL: a log
grown in steps across several 256-leaf blocks, and every inclusion proof that
``LogReader`` assembles (from cached full blocks, a partial block read again as the tree
grows, and a cache too small to hold one proof's blocks) equals the one computed from
the database's stored hashes and verifies against the root."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from shared.db import create_pool
from shared.tlog import store
from shared.tlog.api import LogReader
from shared.tlog.hashing import (
    append_leaves,
    leaf_hash,
    root_from_peaks,
    stored_hash_count,
)
from shared.tlog.proofs import check_record, prove_record
from tests.integration.donations.log_support import log_database

# Sizes the log is grown to, in order: inside the first block, at a block's edge, a
# block and a bit, then far enough for proofs to span many blocks (and levels >= 8).
SIZES = (1, 5, 255, 256, 257, 600, 1024, 1500)


class _Stored(list[bytes]):
    """Every stored hash by index; ``getitem`` of a list of indexes is a ``HashReader``."""

    def getitem(self, indexes: Sequence[int]) -> list[bytes]:
        return [self[i] for i in indexes]


@pytest.fixture(scope="module")
async def log_db() -> AsyncIterator[str]:
    async with log_database("proofcache") as dsn:
        yield dsn


async def test_cached_blocks_give_the_proofs_of_the_stored_hashes(log_db: str) -> None:
    pool = await create_pool(log_db)
    try:
        readers = [LogReader(pool, "key"), LogReader(pool, "key", cache_blocks=1)]
        peaks: list[bytes] = []
        size = 0
        leaves: list[bytes] = []
        async with pool.acquire() as conn:
            for target in SIZES:
                new = [b"record %d" % i for i in range(size, target)]
                stored, peaks = append_leaves(size, peaks, [leaf_hash(v) for v in new])
                async with conn.transaction():
                    await store.append(
                        conn,
                        size,
                        [("t", str(size + i), v) for i, v in enumerate(new)],
                        stored,
                        stored_hash_count(size),
                    )
                leaves += new
                size = target
                root = root_from_peaks(peaks)
                stored_all = await conn.fetch("SELECT hash FROM log_hash ORDER BY hash_index")
                every = _Stored(bytes(r["hash"]) for r in stored_all)
                wanted = sorted({0, size - 1, size // 2, max(size - 300, 0), size // 3})
                for reader in readers:
                    proofs = await reader.inclusion_proofs(conn, size, wanted)
                    for n, proof in zip(wanted, proofs, strict=True):
                        assert proof == prove_record(size, n, every.getitem)
                        check_record(proof, size, root, n, leaf_hash(leaves[n]))
            # Every leaf of the final tree, the second time from a warm cache.
            for reader in readers:
                for _ in range(2):
                    everything = await reader.inclusion_proofs(conn, size, list(range(size)))
                    for n, proof in enumerate(everything):
                        check_record(proof, size, root, n, leaf_hash(leaves[n]))
    finally:
        await pool.close()
