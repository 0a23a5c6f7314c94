"""Applies a service's plain-SQL migrations (``migrations/NNNN_slug.sql``) once each.

Every file runs in its own transaction together with the row that records it, under an
advisory lock, so concurrent starts and repeated runs are safe. A recorded file whose
content changed is an error, never silently re-applied.

Two header lines make that workable for shared parts and for history:
- ``-- include: <module>`` stands for the ``SCHEMA`` (DDL) of that module of the kit, e.g.
  ``-- include: shared.outbox``: a table the kit owns is defined once, in the kit. The
  included SQL counts in the checksum, so a change there is caught like any other edit.
  A later change of that table is another constant of the module, included by a later
  file as ``-- include: <module>:<NAME>`` (e.g. ``shared.outbox:TRACEPARENT_SCHEMA``).
- ``-- supersedes: <sha256>`` says that a database which applied the file with that
  checksum has what the file (with the files after it) creates now. Such a database is
  accepted and its record updated to the new checksum; any other difference still fails.

    python -m shared.migrations --dsn postgresql://... services/orders/migrations
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6766_6D69  # "gfmi": one migration runner per database at a time

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


_INCLUDE = re.compile(r"^-- include: ([\w.]+)(?::(\w+))?[ \t]*$", re.MULTILINE)
_SUPERSEDES = re.compile(r"^-- supersedes: ([0-9a-f]{64})[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def supersedes(self) -> frozenset[str]:
        """Checksums of earlier versions of this file that databases may have applied."""
        return frozenset(_SUPERSEDES.findall(self.sql))


class MigrationError(RuntimeError):
    pass


def _expand_includes(sql: str) -> str:
    def schema(match: re.Match[str]) -> str:
        module, name = match.group(1), match.group(2) or "SCHEMA"
        ddl = getattr(importlib.import_module(module), name, None)
        if not isinstance(ddl, str):
            raise MigrationError(f"-- include: {module} has no {name}")
        return f"{match.group(0)}\n{ddl.strip()}"

    return _INCLUDE.sub(schema, sql)


def load_migrations(directory: Path) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        prefix, _, _ = path.stem.partition("_")
        if not prefix.isdigit():
            raise MigrationError(f"{path.name}: expected NNNN_slug.sql")
        found.append(Migration(int(prefix), path.stem, _expand_includes(path.read_text())))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"{directory}: two migrations share a version")
    return found


async def apply_migrations(conn: asyncpg.Connection[Any], directory: Path) -> list[str]:
    """Applies pending migrations; returns the names applied now."""
    migrations = load_migrations(directory)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migration")
        recorded = {r["version"]: r for r in rows}
        for migration in migrations:
            done = recorded.get(migration.version)
            if done is not None:
                if done["checksum"] == migration.checksum:
                    continue
                if done["checksum"] not in migration.supersedes:
                    raise MigrationError(
                        f"{migration.name} was applied with other content; add a new migration"
                    )
                await conn.execute(
                    "UPDATE schema_migration SET checksum = $2 WHERE version = $1",
                    migration.version,
                    migration.checksum,
                )
                log.info("migration superseded", extra={"migration": migration.name})
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migration (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration applied", extra={"migration": migration.name})
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def migrate(dsn: str, directory: Path) -> list[str]:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn, directory)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    applied = asyncio.run(migrate(args.dsn, args.directory))
    log.info("%s: %d migration(s) applied", args.directory, len(applied))


if __name__ == "__main__":
    main()
