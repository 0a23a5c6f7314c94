"""The log's tables in PostgreSQL and every SQL statement on them (a repository for the kit).

This module owns the DDL of the log (``SCHEMA``), which a service's migrations include
with a ``-- include: shared.tlog.store`` line, as they include ``shared.outbox``:

- ``log_pending``: (record_table, record_key) of records that have no leaf yet, written
  in the record's own transaction by ``log_enqueue``, a statement-level AFTER INSERT
  trigger over the statement's transition table (one INSERT ... SELECT per statement,
  whatever the batch size). A service attaches it to each record table:

      CREATE TRIGGER ledger_entry_log AFTER INSERT ON ledger_entry
          REFERENCING NEW TABLE AS new FOR EACH STATEMENT
          EXECUTE FUNCTION log_enqueue('entry_id');

  The argument names the key column; only rows actually inserted are in the transition
  table, so a redelivered batch that hits ``ON CONFLICT DO NOTHING`` enqueues nothing.
  ``SCHEMA``'s version of it also NOTIFYs; ``NO_NOTIFY_SCHEMA`` (a later migration)
  replaces it with one that does not, for the reason ``shared.outbox`` gives: a committing
  transaction that NOTIFYs holds a cluster-wide lock through its WAL flush. The sequencer
  polls instead.
- ``log_leaf``: leaf_index -> (record_table, record_key, leaf bytes); a record has at
  most one leaf (unique key), a leaf index exactly one record.
- ``log_hash``: the stored hashes (``shared.tlog.hashing``'s layout) by stored-hash index.
- ``log_tree``: one row, the tree size. ``log_checkpoint``: signed checkpoints by size.

Statements are set-based: leaves and hashes go in with COPY, pending rows are deleted by
their exact ids (never ``id <= max``: ids are not commit order, and a lower id committed
late must stay queued), and every proof reads its hashes in one query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from shared.db import Conn
from shared.tlog.hashing import HASH_SIZE, Hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_pending (
    id           bigserial PRIMARY KEY,
    record_table text      NOT NULL,
    record_key   text      NOT NULL
);

CREATE TABLE IF NOT EXISTS log_leaf (
    leaf_index   bigint PRIMARY KEY CHECK (leaf_index >= 0),
    record_table text   NOT NULL,
    record_key   text   NOT NULL,
    leaf         bytea  NOT NULL,
    UNIQUE (record_table, record_key)
);

CREATE TABLE IF NOT EXISTS log_hash (
    hash_index bigint PRIMARY KEY CHECK (hash_index >= 0),
    hash       bytea  NOT NULL CHECK (length(hash) = 32)
);

CREATE TABLE IF NOT EXISTS log_tree (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    size bigint  NOT NULL CHECK (size >= 0)
);
INSERT INTO log_tree (one, size) VALUES (true, 0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS log_checkpoint (
    size      bigint      PRIMARY KEY CHECK (size >= 0),
    root_hash bytea       NOT NULL CHECK (length(root_hash) = 32),
    note      bytea       NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION log_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO log_pending (record_table, record_key) SELECT %L, (%I)::text FROM new',
        TG_TABLE_NAME, TG_ARGV[0]);
    PERFORM pg_notify('log_pending', '');
    RETURN NULL;
END
$$;
"""

# ``log_enqueue`` without its NOTIFY (``-- include: shared.tlog.store:NO_NOTIFY_SCHEMA``).
NO_NOTIFY_SCHEMA = """
CREATE OR REPLACE FUNCTION log_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO log_pending (record_table, record_key) SELECT %L, (%I)::text FROM new',
        TG_TABLE_NAME, TG_ARGV[0]);
    RETURN NULL;
END
$$;
"""


class Pending(NamedTuple):
    """A pending row (a tuple: thousands are built per batch, a frozen dataclass costs
    several times as much to make)."""

    id: int
    record_table: str
    record_key: str


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root_hash: Hash
    note: bytes

    @cached_property
    def text(self) -> str:
        """The signed note as text (decoded once per checkpoint, not per proof)."""
        return self.note.decode("utf-8")


_PENDING = "SELECT id, record_table, record_key FROM log_pending ORDER BY id LIMIT $1"
# The same, leaving out the rows of ``$2`` (a hashed subplan: one pass over them).
_PENDING_SKIPPING = """
SELECT id, record_table, record_key FROM log_pending
WHERE id NOT IN (SELECT unnest($2::bigint[])) ORDER BY id LIMIT $1
"""
_DELETE_PENDING = "DELETE FROM log_pending WHERE id = ANY($1::bigint[])"
_SIZE = "SELECT size FROM log_tree"
_SET_SIZE = "UPDATE log_tree SET size = $1 WHERE size = $2"
_HASHES = """
SELECT h.hash FROM unnest($1::bigint[]) WITH ORDINALITY AS w(hash_index, n)
JOIN log_hash h USING (hash_index) ORDER BY w.n
"""
# Runs [lo, hi) of stored hashes, each concatenated in index order: one row per run.
_HASH_RUNS = """
SELECT r.lo, string_agg(h.hash, ''::bytea ORDER BY h.hash_index) AS hashes
FROM unnest($1::bigint[], $2::bigint[]) AS r(lo, hi)
JOIN log_hash AS h ON h.hash_index >= r.lo AND h.hash_index < r.hi
GROUP BY r.lo
"""
_SAVE_CHECKPOINT = """
INSERT INTO log_checkpoint (size, root_hash, note) VALUES ($1, $2, $3)
ON CONFLICT (size) DO UPDATE SET note = excluded.note, signed_at = clock_timestamp()
WHERE log_checkpoint.root_hash = excluded.root_hash
RETURNING size
"""
_LATEST_CHECKPOINT = """
SELECT size, root_hash, note FROM log_checkpoint ORDER BY size DESC LIMIT 1
"""
_LEAVES = """
SELECT leaf_index, leaf FROM log_leaf WHERE leaf_index >= $1 AND leaf_index < $2
ORDER BY leaf_index
"""
_LOGGED = """
SELECT record_key FROM log_leaf WHERE record_table = $1 AND record_key = ANY($2::text[])
"""
_RECORD_LEAVES = """
SELECT record_key, leaf_index, leaf FROM log_leaf
WHERE record_table = $1 AND record_key = ANY($2::text[])
"""
_LEAF_COUNTS = """
SELECT count(*) AS leaves, count(DISTINCT (record_table, record_key)) AS records,
       (SELECT size FROM log_tree) AS size, (SELECT count(*) FROM log_pending) AS pending
FROM log_leaf
"""


class StoreError(RuntimeError):
    """The stored log is not what the kit wrote (a missing hash, a changed size)."""


async def pending(conn: Conn, limit: int, skip: Sequence[int] = ()) -> list[Pending]:
    """Up to ``limit`` pending rows, oldest first, but those whose id is in ``skip``."""
    rows = await (
        conn.fetch(_PENDING_SKIPPING, limit, skip) if skip else conn.fetch(_PENDING, limit)
    )
    return [Pending(*r) for r in rows]


async def delete_pending(conn: Conn, ids: Sequence[int]) -> None:
    await conn.execute(_DELETE_PENDING, list(ids))


async def tree_size(conn: Conn) -> int:
    size: int = await conn.fetchval(_SIZE)
    return size


async def hashes(conn: Conn, indexes: Sequence[int]) -> list[Hash]:
    """The stored hashes at ``indexes``, in that order: one query."""
    if not indexes:
        return []
    rows = await conn.fetch(_HASHES, list(indexes))
    if len(rows) != len(indexes):
        raise StoreError(f"asked for {len(indexes)} stored hashes, found {len(rows)}")
    return [bytes(r["hash"]) for r in rows]


async def hash_runs(conn: Conn, runs: Sequence[tuple[int, int]]) -> dict[int, bytes]:
    """The stored hashes of each run ``[lo, hi)``, concatenated (32 bytes each, in index
    order), by ``lo``: one query for all runs."""
    if not runs:
        return {}
    rows = await conn.fetch(_HASH_RUNS, [lo for lo, _ in runs], [hi for _, hi in runs])
    found = {int(r["lo"]): bytes(r["hashes"]) for r in rows}
    for lo, hi in runs:
        if len(found.get(lo, b"")) != (hi - lo) * HASH_SIZE:
            raise StoreError(f"stored hashes {lo} to {hi} are not all there")
    return found


async def append(
    conn: Conn,
    old_size: int,
    leaves: Sequence[tuple[str, str, bytes]],
    stored: Sequence[Hash],
    first_hash_index: int,
) -> None:
    """Writes ``leaves`` (record_table, record_key, leaf) from index ``old_size`` on and
    their stored hashes from ``first_hash_index`` on (COPY), then moves the tree size."""
    await conn.copy_records_to_table(
        "log_leaf",
        records=[(old_size + i, t, k, leaf) for i, (t, k, leaf) in enumerate(leaves)],
        columns=("leaf_index", "record_table", "record_key", "leaf"),
    )
    await conn.copy_records_to_table(
        "log_hash",
        records=[(first_hash_index + i, h) for i, h in enumerate(stored)],
        columns=("hash_index", "hash"),
    )
    status = await conn.execute(_SET_SIZE, old_size + len(leaves), old_size)
    if status != "UPDATE 1":
        raise StoreError(f"the tree is no longer of size {old_size}")


async def save_checkpoint(conn: Conn, size: int, root_hash: Hash, note: bytes) -> None:
    """Stores the signed checkpoint of ``size`` (a re-signing replaces the note only if
    the root is the same: a size never gets a second root)."""
    if await conn.fetchval(_SAVE_CHECKPOINT, size, root_hash, note) is None:
        raise StoreError(f"a checkpoint of size {size} with another root is stored")


async def latest_checkpoint(conn: Conn) -> StoredCheckpoint | None:
    row = await conn.fetchrow(_LATEST_CHECKPOINT)
    if row is None:
        return None
    return StoredCheckpoint(row["size"], bytes(row["root_hash"]), bytes(row["note"]))


async def leaves(conn: Conn, start: int, stop: int) -> list[tuple[int, bytes]]:
    """Leaves with ``start <= leaf_index < stop``, in order."""
    rows = await conn.fetch(_LEAVES, start, stop)
    return [(r["leaf_index"], bytes(r["leaf"])) for r in rows]


async def logged(conn: Conn, record_table: str, record_keys: Sequence[str]) -> set[str]:
    """Those of ``record_keys`` that already have a leaf."""
    rows = await conn.fetch(_LOGGED, record_table, list(record_keys))
    return {r["record_key"] for r in rows}


async def record_leaves(
    conn: Conn, record_table: str, record_keys: Sequence[str]
) -> dict[str, tuple[int, bytes]]:
    """record_key -> (leaf_index, leaf) of those records that have a leaf."""
    rows = await conn.fetch(_RECORD_LEAVES, record_table, list(record_keys))
    return {r["record_key"]: (r["leaf_index"], bytes(r["leaf"])) for r in rows}


def with_leaves(records_query: str, order_by: str) -> str:
    """A service's query of records (columns ``record_table`` and ``record_key``, and
    any others) extended with each record's ``leaf_index`` and ``leaf`` (null while it
    has none), ordered by ``order_by`` over its columns: the records and their leaves
    in one round trip, the log's part of the SQL kept here."""
    return (
        f"WITH r AS MATERIALIZED ({records_query})\n"
        "SELECT r.*, l.leaf_index, l.leaf FROM r\n"
        "LEFT JOIN log_leaf AS l USING (record_table, record_key)\n"
        f"ORDER BY {order_by}"
    )


async def counts(conn: Conn) -> dict[str, int]:
    """Leaves, distinct records with a leaf, tree size and pending rows (tests, tools)."""
    row = await conn.fetchrow(_LEAF_COUNTS)
    assert row is not None
    return {k: int(row[k]) for k in ("leaves", "records", "size", "pending")}
