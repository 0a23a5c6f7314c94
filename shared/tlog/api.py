"""Serving a log: ``LogReader`` (the service layer of the log's reads) and ``log_router``
(the four public ``/v1/log`` endpoints), shared by every service that keeps a log.

The lifespan stores the reader as ``app.state.log``. What is served:

- ``GET /v1/log/checkpoint``: the latest signed checkpoint (text/plain), from memory: the
  process's own sequencer hands each new one over as it commits it, and otherwise the
  stored latest is read again after ``cache_seconds`` (0.2 s).
- ``GET /v1/log/key``: the verifier key (text/plain), ``<origin>+<hex key hash>+<base64>``.
- ``GET /v1/log/entries?start=N&limit=K``: leaves ``[N, min(N+K, size))`` of the served
  checkpoint, ``{entries: [{leaf_index, leaf_b64}]}``; 422 if ``start`` > size.
- ``GET /v1/log/consistency?first=N&second=M``: RFC 9162 consistency proof from size N to
  size M, ``{first, second, proof: [b64...]}``; 422 unless 0 <= N <= M <= size (the proof
  is empty when N is 0 or N == M).

Every proof is assembled from stored hashes, never by rehashing leaves. Inclusion proofs
(the per-record proof endpoints of the services, the hot read) take them from an
in-process cache of blocks: block ``b`` holds the stored hashes that appending leaves
``256b`` to ``256b + 255`` wrote (``hashing``'s layout makes them one run of indexes,
leaf hashes and every subtree completed inside), so a full block never changes. A proof's
missing blocks are read in one query; the rightmost, partial block is cached with what
the served checkpoint covers and read again when a larger checkpoint needs more of it.
Consistency proofs read their hashes from the database each time.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from shared.db import Conn, Pool
from shared.problems import Invalid, Unavailable, problem_responses
from shared.tlog import store
from shared.tlog.checkpoint import MAX_TREE_SIZE
from shared.tlog.hashing import HASH_SIZE, Hash, root_from_peaks, stored_hash_count
from shared.tlog.proofs import (
    record_proof_groups,
    tree_proof_from_hashes,
    tree_proof_indexes,
)

MAX_ENTRIES = 1000
BLOCK_LEAVES = 256
# 2,048 blocks of about 16 KiB: the hashes of the latest 524,288 leaves (32 MiB).
CACHE_BLOCKS = 2048


def block_start(block: int) -> int:
    """The first stored-hash index of ``block`` (``stored_hash_index(0, 256 * block)``)."""
    m = block * BLOCK_LEAVES
    return 2 * m - m.bit_count()


def block_of(index: int) -> int:
    """The block whose run of stored hashes holds ``index``."""
    block = index // (2 * BLOCK_LEAVES)  # block_start(b) <= 512 b, so never too far
    while block_start(block + 1) <= index:
        block += 1
    return block


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class NoCheckpointYet(Unavailable):
    title = "No checkpoint yet"

    def __init__(self) -> None:
        super().__init__("the log has not signed its first checkpoint yet", retry_after=1)


_DESCRIBED = ConfigDict(use_attribute_docstrings=True)


class LogEntryOut(BaseModel):
    """One leaf of the log."""

    model_config = _DESCRIBED

    leaf_index: int
    """The leaf's index in the log."""
    leaf_b64: str
    """The leaf's bytes (canonical JSON), base64."""


class LogEntriesOut(BaseModel):
    """A run of leaves, for monitors that rebuild the tree."""

    model_config = _DESCRIBED

    entries: list[LogEntryOut]
    """The leaves from ``start`` on, in index order."""


class ConsistencyOut(BaseModel):
    """A consistency proof (RFC 9162) between two tree sizes."""

    model_config = _DESCRIBED

    first: int
    """The earlier tree size."""
    second: int
    """The later tree size."""
    proof: list[str]
    """The proof's hashes, base64."""


class LogReader:
    """Reads of one log over a service's pool: checkpoint, key, leaves, proofs."""

    def __init__(
        self,
        pool: Pool,
        verifier_key: str,
        *,
        cache_seconds: float = 0.2,
        cache_blocks: int = CACHE_BLOCKS,
    ) -> None:
        self._pool = pool
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = cache_blocks
        self.verifier_key = verifier_key
        self._cache_seconds = cache_seconds
        self._latest: store.StoredCheckpoint | None = None
        self._read_at = float("-inf")

    def publish(self, checkpoint: store.StoredCheckpoint) -> None:
        """A newly committed checkpoint (the sequencer's ``on_checkpoint``)."""
        if self._latest is None or checkpoint.size >= self._latest.size:
            self._latest = checkpoint
            self._read_at = time.monotonic()

    async def checkpoint(self, *, fresh: bool = False) -> store.StoredCheckpoint:
        """The latest signed checkpoint (at most ``cache_seconds`` old unless ``fresh``)."""
        if fresh or self._latest is None or time.monotonic() - self._read_at > self._cache_seconds:
            async with self._pool.acquire() as conn:
                stored = await store.latest_checkpoint(conn)
            if stored is not None:
                self.publish(stored)
                self._read_at = time.monotonic()
        if self._latest is None:
            raise NoCheckpointYet()
        return self._latest

    async def entries(self, start: int, limit: int) -> LogEntriesOut:
        checkpoint = await self.checkpoint()
        if start > checkpoint.size:
            raise Invalid([("start", f"beyond the tree size {checkpoint.size}")])
        async with self._pool.acquire() as conn:
            rows = await store.leaves(conn, start, min(start + limit, checkpoint.size))
        return LogEntriesOut(entries=[LogEntryOut(leaf_index=i, leaf_b64=b64(v)) for i, v in rows])

    async def consistency(self, first: int, second: int) -> ConsistencyOut:
        if first > second:
            raise Invalid([("first", "must not exceed second")])
        checkpoint = await self.checkpoint()
        if second > checkpoint.size:  # a client may have a newer checkpoint than our cache
            checkpoint = await self.checkpoint(fresh=True)
        if second > checkpoint.size:
            raise Invalid([("second", f"beyond the tree size {checkpoint.size}")])
        proof: list[Hash] = []
        if first > 0:
            indexes = tree_proof_indexes(second, first)
            async with self._pool.acquire() as conn:
                hashes = await store.hashes(conn, indexes)
            proof = tree_proof_from_hashes(second, first, hashes)
        return ConsistencyOut(first=first, second=second, proof=[b64(h) for h in proof])

    async def inclusion_proofs(
        self, conn: Conn, size: int, leaf_indexes: Sequence[int]
    ) -> list[list[Hash]]:
        """The inclusion proof of each leaf in the tree of ``size``: from cached blocks,
        reading those missing (or short) in one query."""
        groups = [record_proof_groups(size, n) for n in leaf_indexes]
        blocks = self._blocks
        located: dict[int, tuple[int, int]] = {}  # stored index -> (block, byte offset)
        got: dict[int, bytes] = {}  # the blocks this proof reads, held across the await
        short: set[int] = set()
        for proof_groups in groups:
            for group in proof_groups:
                for i in group:
                    if i in located:
                        continue
                    block = block_of(i)
                    offset = (i - block_start(block)) * HASH_SIZE
                    located[i] = (block, offset)
                    cached = got.get(block) or blocks.get(block)
                    if cached is None or len(cached) <= offset:
                        short.add(block)
                    else:
                        got[block] = cached
        if short:
            got.update(await self._read_blocks(conn, size, short))
        for block, data in got.items():
            if len(data) >= len(blocks.get(block, b"")):  # never shorten a cached block
                blocks[block] = data
            blocks.move_to_end(block)
        while len(blocks) > self._cache_blocks:
            blocks.popitem(last=False)

        def stored(i: int) -> Hash:
            block, offset = located[i]
            return got[block][offset : offset + HASH_SIZE]

        return [
            [stored(g[0]) if len(g) == 1 else root_from_peaks([stored(i) for i in g]) for g in pg]
            for pg in groups
        ]

    @staticmethod
    async def _read_blocks(conn: Conn, size: int, wanted: set[int]) -> dict[int, bytes]:
        """``wanted`` blocks as far as the tree of ``size`` has written them."""
        limit = stored_hash_count(size)
        order = sorted(wanted)
        runs = [(block_start(b), min(block_start(b + 1), limit)) for b in order]
        read = await store.hash_runs(conn, runs)
        return {b: read[lo] for b, (lo, _) in zip(order, runs, strict=True)}


async def app_log(request: Request) -> LogReader:
    """The log reader the lifespan stored as ``app.state.log``."""
    reader: LogReader = request.app.state.log
    return reader


LogDep = Annotated[LogReader, Depends(app_log)]
_TEXT = "text/plain; charset=utf-8"


def log_router(prefix: str = "/v1/log") -> APIRouter:
    """The public endpoints of the log served by ``app.state.log``."""
    router = APIRouter(
        prefix=prefix, tags=["transparency log"], responses=problem_responses(422, 503)
    )

    @router.get("/checkpoint", response_class=Response)
    async def get_checkpoint(log: LogDep) -> Response:
        """The latest signed checkpoint (C2SP tlog-checkpoint in a signed note)."""
        checkpoint = await log.checkpoint()
        return Response(checkpoint.note, media_type=_TEXT, headers={"Cache-Control": "no-cache"})

    @router.get("/key", response_class=Response)
    async def get_key(log: LogDep) -> Response:
        """The verifier key of the log's checkpoints (Go sumdb/note format)."""
        return Response(log.verifier_key, media_type=_TEXT)

    @router.get("/entries")
    async def get_entries(
        log: LogDep,
        start: Annotated[int, Query(ge=0, le=MAX_TREE_SIZE, description="The first leaf.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES, description="Most leaves.")] = 100,
    ) -> LogEntriesOut:
        """Leaves from ``start``, at most ``limit``, within the served checkpoint."""
        return await log.entries(start, limit)

    @router.get("/consistency")
    async def get_consistency(
        log: LogDep,
        first: Annotated[int, Query(ge=0, le=MAX_TREE_SIZE, description="The earlier size.")],
        second: Annotated[int, Query(ge=0, le=MAX_TREE_SIZE, description="The later size.")],
    ) -> ConsistencyOut:
        """The proof that the tree of size ``second`` extends the tree of size ``first``."""
        return await log.consistency(first, second)

    return router
