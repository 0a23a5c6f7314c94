"""The sequencer: gives queued records their leaves and signs a checkpoint of each new size.

One per service process, but one at a time per log: a sequencer works only while it holds
a session advisory lock on its own connection, and runs each batch on that connection.
If the connection (or the process) dies, the lock goes with it and another process takes
over on its next claim.

A batch has two steps. Reading: up to ``batch_size`` pending rows oldest first, and
their leaves built (one statement per record table, through the service's ``LeafSource``;
an order's salt is made there, by its own statement, committed at once) and hashed.
Appending, ONE transaction on the owning connection (see ``shared.tlog.store`` for the
tables): read the tree's peaks once, compute every new stored hash with
``append_leaves``, COPY the leaves and hashes, delete exactly the pending rows read, move
the tree size, store a checkpoint of the new size signed with the log's key; commit.

``drain`` pipelines them: while batch N is appended on the owning connection, batch N+1
is read and built on a second one, so that the sequencer's own work (building and
hashing) and PostgreSQL's (the COPY and the commit) overlap. Batch N+1 is read while N's
deletes are not committed yet, so it leaves out N's pending rows (by id) and N's records
(a record enqueued twice); it is appended only after N committed, on the same
connection, so leaves keep the order in which the batches were read. If N fails, N+1 is
thrown away with it and both are read again. Hence:

- A record gets exactly one leaf. Its pending row is deleted by the transaction that
  appends its leaf; a crash (kill -9 included) anywhere in the batch rolls all of it
  back and the rows are sequenced again (a salt made for it stays, and is used then).
  A record already holding a leaf (a pending row enqueued twice by hand) is dropped,
  never appended twice (and ``log_leaf``'s unique key would refuse it).
- The tree only grows and every checkpoint stored is of the tree as committed, so each
  is consistent with every earlier one; a size is never signed with two roots.
- Leaves follow the order of the pending rows as read, not the records' own sequence:
  a record committed late joins a later batch.
- New leaves get their checkpoint within one poll (``poll_seconds``, 0.2 s) of being
  queued: the sequencer polls the queue (``log_enqueue`` no longer NOTIFYs; see
  ``shared.tlog.store``).

On start (and on each takeover) it signs the current size again, so a changed key is in
use at once and an empty log has its size-0 checkpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import asyncpg
from prometheus_client import Counter, Gauge

from shared.db import Conn, connect
from shared.observability import get_logger
from shared.tlog import store
from shared.tlog.checkpoint import Checkpoint, sign_checkpoint
from shared.tlog.hashing import (
    append_leaves,
    leaf_hashes,
    root_from_peaks,
    stored_hash_count,
    tree_hash_indexes,
)
from shared.tlog.note import Signer
from shared.waiting import wait_at_most

log = get_logger(__name__)

_LOCK_NAMESPACE = 0x6766_746C  # "gftl"
_CLAIM = "SELECT pg_try_advisory_lock($1, 0)"

LEAVES = Counter("gfg_log_leaves_total", "Leaves appended to the transparency log", ["log"])
SIZE = Gauge("gfg_log_size", "Tree size of the latest signed checkpoint", ["log"])


class LeafSource(Protocol):
    """Builds the leaves of one record table's records (a service's part of the log)."""

    table: str

    async def leaves(self, conn: Conn, keys: Sequence[str]) -> Mapping[str, bytes]:
        """record_key -> leaf bytes for those ``keys`` whose record exists; one statement."""
        ...


class UnknownRecordTable(RuntimeError):
    pass


class _Batch(NamedTuple):
    """A batch read and built, ready to append: its pending rows' ids, its new leaves
    (record_table, record_key, leaf) in the order read, and their leaf hashes."""

    ids: list[int]
    leaves: list[tuple[str, str, bytes]]
    hashes: list[bytes]

    def records(self) -> set[tuple[str, str]]:
        return {(t, k) for t, k, _ in self.leaves}


class Sequencer:
    """The background worker of one log (``run``/``stop``, as ``shared.web.Workers`` wants)."""

    def __init__(
        self,
        *,
        origin: str,
        dsn: str,
        signer: Signer,
        sources: Sequence[LeafSource],
        batch_size: int = 5000,
        poll_seconds: float = 0.2,
        claim_interval_seconds: float = 1.0,
        on_checkpoint: Callable[[store.StoredCheckpoint], None] | None = None,
    ) -> None:
        self.origin = origin
        self._dsn = dsn
        self._signer = signer
        self._sources = {s.table: s for s in sources}
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._claim_interval = claim_interval_seconds
        self._on_checkpoint = on_checkpoint
        self._conn: asyncpg.Connection[Any] | None = None
        self._reader: asyncpg.Connection[Any] | None = None  # drain's second connection
        self._owner = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.appended = 0

    @property
    def owner(self) -> bool:
        return self._owner

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Runs until ``stop()``, surviving database outages."""
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                if not await self.claim():
                    await self._sleep(self._claim_interval)
                    continue
                await self.drain()
                backoff = 0.1
                await self._wait_for_work()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                await self._disconnect()
                log.warning("log sequencer waiting for the database", error=str(exc))
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # a bug or a bad record: let another process try
                await self._disconnect()
                log.error("log sequencer failed", error=f"{type(exc).__name__}: {exc}")
                await self._sleep(5.0)
        await self._disconnect()

    async def claim(self) -> bool:
        """Connects and takes the log's lock if free; signs the current size when it does."""
        if self._conn is None or self._conn.is_closed():
            self._owner = False
            self._conn = await connect(self._dsn)
        if not self._owner:
            self._owner = bool(await self._conn.fetchval(_CLAIM, _LOCK_NAMESPACE))
            if self._owner:
                log.info("log sequencer owns the log", log=self.origin)
                await self.sign_current()
        return self._owner

    def server_pids(self) -> list[int]:
        """The process ids of this sequencer's PostgreSQL backends: the owning
        connection's, then drain's reader's once it has one (benchmarks)."""
        pids = [self._require_owner().get_server_pid()]
        if self._reader is not None and not self._reader.is_closed():
            pids.append(self._reader.get_server_pid())
        return pids

    async def close(self) -> None:
        await self._disconnect()

    async def sign_current(self) -> store.StoredCheckpoint:
        """Signs and stores a checkpoint of the tree as it is."""
        conn = self._require_owner()
        async with conn.transaction():
            size = await store.tree_size(conn)
            peaks = await store.hashes(conn, tree_hash_indexes(size))
            checkpoint = await self._sign(conn, size, root_from_peaks(peaks))
        self._published(checkpoint)
        return checkpoint

    async def sequence_once(self) -> int:
        """One batch, read and appended on the owning connection (see the module
        docstring); returns how many leaves it appended."""
        conn = self._require_owner()
        batch = await self._read(conn, (), ())
        return 0 if batch is None else await self._append(conn, batch)

    async def drain(self) -> int:
        """Appends batches until a batch is not full, reading each next one on a second
        connection while the one before is appended (see the module docstring); returns
        how many leaves it appended."""
        conn = self._require_owner()
        if self._reader is None or self._reader.is_closed():
            self._reader = await connect(self._dsn)
        reader = self._reader
        appended = 0
        batch = await self._read(reader, (), ())
        while batch is not None:
            appending = asyncio.ensure_future(self._append(conn, batch))
            following = None
            try:
                if len(batch.ids) >= self._batch_size:
                    following = await self._read(reader, batch.ids, batch.records())
            finally:
                # Awaited whatever the read did: a failed append throws ``following``
                # away with it, and a failed read leaves no append running.
                appended += await appending
            batch = following
        return appended

    async def _read(
        self, conn: Conn, in_flight: Sequence[int], in_flight_records: Collection[tuple[str, str]]
    ) -> _Batch | None:
        """The next batch: up to ``batch_size`` pending rows oldest first, leaving out the
        rows ``in_flight`` (a batch being appended: its deletes are not committed yet)
        and the records it appends."""
        rows = await store.pending(conn, self._batch_size, in_flight)
        if not rows:
            return None
        new = await self._build(conn, rows, in_flight_records)
        return _Batch([r.id for r in rows], new, leaf_hashes(leaf for *_, leaf in new))

    async def _append(self, conn: Conn, batch: _Batch) -> int:
        """Appends ``batch`` in one transaction and publishes its checkpoint."""
        new = batch.leaves
        checkpoint = None
        async with conn.transaction():
            if new:
                size = await store.tree_size(conn)
                peaks = await store.hashes(conn, tree_hash_indexes(size))
                stored, peaks = append_leaves(size, peaks, batch.hashes)
                await store.append(conn, size, new, stored, stored_hash_count(size))
            await store.delete_pending(conn, batch.ids)
            if new:
                checkpoint = await self._sign(conn, size + len(new), root_from_peaks(peaks))
        if checkpoint is not None:
            self._published(checkpoint)
        self.appended += len(new)
        LEAVES.labels(self.origin).inc(len(new))
        if len(new) < len(batch.ids):
            log.warning("pending records dropped", count=len(batch.ids) - len(new), log=self.origin)
        return len(new)

    async def _build(
        self,
        conn: Conn,
        batch: Sequence[store.Pending],
        in_flight: Collection[tuple[str, str]],
    ) -> list[tuple[str, str, bytes]]:
        """(record_table, record_key, leaf) in the batch's order, each record once, none
        that already has a leaf, is being appended (``in_flight``) or no longer exists."""
        by_table: dict[str, list[str]] = {}
        for p in batch:
            by_table.setdefault(p.record_table, []).append(p.record_key)
        built: dict[tuple[str, str], bytes] = {}
        for table, keys in by_table.items():
            source = self._sources.get(table)
            if source is None:
                raise UnknownRecordTable(f"log {self.origin} has no leaf source for {table}")
            done = await store.logged(conn, table, keys)
            fresh = list(
                dict.fromkeys(k for k in keys if k not in done and (table, k) not in in_flight)
            )
            if fresh:
                for record_key, leaf in (await source.leaves(conn, fresh)).items():
                    built[(table, record_key)] = leaf
        new: list[tuple[str, str, bytes]] = []
        for p in batch:
            key = (p.record_table, p.record_key)
            if key in built:
                new.append((p.record_table, p.record_key, built.pop(key)))
        return new

    async def _sign(self, conn: Conn, size: int, root: bytes) -> store.StoredCheckpoint:
        note = sign_checkpoint(Checkpoint(self.origin, size, root), [self._signer])
        await store.save_checkpoint(conn, size, root, note)
        return store.StoredCheckpoint(size, root, note)

    def _published(self, checkpoint: store.StoredCheckpoint) -> None:
        SIZE.labels(self.origin).set(checkpoint.size)
        if self._on_checkpoint is not None:
            self._on_checkpoint(checkpoint)

    def _require_owner(self) -> asyncpg.Connection[Any]:
        if self._conn is None or not self._owner:
            raise RuntimeError("the sequencer does not own the log (call claim() first)")
        return self._conn

    async def _disconnect(self) -> None:
        self._owner = False
        for conn in (self._conn, self._reader):
            if conn is not None and not conn.is_closed():
                try:
                    await conn.close(timeout=2)
                except Exception:
                    conn.terminate()
        self._conn = self._reader = None

    async def _wait_for_work(self) -> None:
        await wait_at_most(self._wake, self._poll)
        self._wake.clear()

    async def _sleep(self, seconds: float) -> None:
        await wait_at_most(self._stopping, seconds)
