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

Every proof is assembled from stored hashes read in one query, never by rehashing leaves.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from shared.db import Conn, Pool
from shared.problems import Invalid, Unavailable
from shared.tlog import store
from shared.tlog.checkpoint import MAX_TREE_SIZE
from shared.tlog.hashing import Hash
from shared.tlog.proofs import (
    record_proof_from_hashes,
    record_proof_indexes,
    tree_proof_from_hashes,
    tree_proof_indexes,
)

MAX_ENTRIES = 1000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class NoCheckpointYet(Unavailable):
    title = "No checkpoint yet"

    def __init__(self) -> None:
        super().__init__("the log has not signed its first checkpoint yet", retry_after=1)


class LogEntryOut(BaseModel):
    leaf_index: int
    leaf_b64: str


class LogEntriesOut(BaseModel):
    entries: list[LogEntryOut]


class ConsistencyOut(BaseModel):
    first: int
    second: int
    proof: list[str]


class LogReader:
    """Reads of one log over a service's pool: checkpoint, key, leaves, proofs."""

    def __init__(self, pool: Pool, verifier_key: str, *, cache_seconds: float = 0.2) -> None:
        self._pool = pool
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
        """The inclusion proof of each leaf in the tree of ``size``: one query for all."""
        needs = [record_proof_indexes(size, n) for n in leaf_indexes]
        wanted = sorted({i for need in needs for i in need})
        found = dict(zip(wanted, await store.hashes(conn, wanted), strict=True))
        return [
            record_proof_from_hashes(size, n, [found[i] for i in need])
            for n, need in zip(leaf_indexes, needs, strict=True)
        ]


async def app_log(request: Request) -> LogReader:
    """The log reader the lifespan stored as ``app.state.log``."""
    reader: LogReader = request.app.state.log
    return reader


LogDep = Annotated[LogReader, Depends(app_log)]
_TEXT = "text/plain; charset=utf-8"


def log_router(prefix: str = "/v1/log") -> APIRouter:
    """The public endpoints of the log served by ``app.state.log``."""
    router = APIRouter(prefix=prefix, tags=["transparency log"])

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
        start: Annotated[int, Query(ge=0, le=MAX_TREE_SIZE)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES)] = 100,
    ) -> LogEntriesOut:
        """Leaves from ``start``, at most ``limit``, within the served checkpoint."""
        return await log.entries(start, limit)

    @router.get("/consistency")
    async def get_consistency(
        log: LogDep,
        first: Annotated[int, Query(ge=0, le=MAX_TREE_SIZE)],
        second: Annotated[int, Query(ge=0, le=MAX_TREE_SIZE)],
    ) -> ConsistencyOut:
        """The proof that the tree of size ``second`` extends the tree of size ``first``."""
        return await log.consistency(first, second)

    return router
