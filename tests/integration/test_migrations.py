from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.migrations import MigrationError, apply_migrations, load_migrations
from shared.outbox import BUCKETS
from shared.settings import CommonSettings
from tests.conftest import unique


@pytest.fixture
async def scratch_schema(common_settings: CommonSettings) -> Any:
    """A connection whose search_path is a fresh schema, dropped afterwards."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(common_settings.dsn("orders_test"))
    schema = unique("mig").replace("-", "_")
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.execute(f"SET search_path TO {schema}")
    try:
        yield conn
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


def write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql)


async def test_migrations_apply_once_and_a_second_run_is_a_no_op(
    scratch_schema: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    write(tmp_path, "0001_widget.sql", "CREATE TABLE widget (id int PRIMARY KEY);")
    write(tmp_path, "0002_widget_name.sql", "ALTER TABLE widget ADD COLUMN name text;")

    assert await apply_migrations(scratch_schema, tmp_path) == [
        "0001_widget",
        "0002_widget_name",
    ]
    assert await apply_migrations(scratch_schema, tmp_path) == []

    versions = await scratch_schema.fetch("SELECT version FROM schema_migration ORDER BY 1")
    assert [r["version"] for r in versions] == [1, 2]
    await scratch_schema.execute("INSERT INTO widget (id, name) VALUES (1, 'a')")


async def test_a_failing_migration_leaves_nothing_half_applied(
    scratch_schema: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    write(tmp_path, "0001_ok.sql", "CREATE TABLE ok (id int);")
    write(tmp_path, "0002_broken.sql", "CREATE TABLE half (id int); SELECT no_such_function();")

    with pytest.raises(asyncpg.UndefinedFunctionError):
        await apply_migrations(scratch_schema, tmp_path)

    recorded = await scratch_schema.fetch("SELECT name FROM schema_migration")
    assert [r["name"] for r in recorded] == ["0001_ok"]
    assert await scratch_schema.fetchval("SELECT to_regclass('half')") is None


async def test_an_edited_applied_migration_is_refused(
    scratch_schema: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id int);")
    await apply_migrations(scratch_schema, tmp_path)
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id bigint);")
    with pytest.raises(MigrationError, match="other content"):
        await apply_migrations(scratch_schema, tmp_path)


@pytest.mark.parametrize("service", ["orders", "donations", "charities"])
async def test_each_service_migrates_twice_cleanly(
    scratch_schema: asyncpg.Connection[Any], service: str
) -> None:
    directory = Path(__file__).parents[2] / "services" / service / "migrations"
    if not directory.is_dir():
        pytest.fail(f"{directory} is missing")
    first = await apply_migrations(scratch_schema, directory)
    assert first, "no migrations found"
    assert await apply_migrations(scratch_schema, directory) == []


async def test_an_include_brings_a_kit_schema_and_counts_in_the_checksum(
    scratch_schema: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    write(tmp_path, "0001_outbox.sql", "-- include: shared.outbox\n")
    assert await apply_migrations(scratch_schema, tmp_path) == ["0001_outbox"]
    assert await apply_migrations(scratch_schema, tmp_path) == []

    await scratch_schema.execute(
        "INSERT INTO outbox (topic, aggregate_type, aggregate_id, type, payload) "
        "VALUES ('t', 'order', 'o-1', 'x', '\\x00')"
    )
    bucket = await scratch_schema.fetchval("SELECT bucket FROM outbox")
    assert 0 <= bucket < BUCKETS
    (migration,) = load_migrations(tmp_path)
    assert "CREATE TABLE outbox" in migration.sql


async def test_a_named_include_brings_a_later_kit_change(
    scratch_schema: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    write(tmp_path, "0001_outbox.sql", "-- include: shared.outbox\n")
    write(tmp_path, "0002_trace.sql", "-- include: shared.outbox:TRACEPARENT_SCHEMA\n")
    assert await apply_migrations(scratch_schema, tmp_path) == ["0001_outbox", "0002_trace"]
    (first, second) = load_migrations(tmp_path)
    assert "ADD COLUMN IF NOT EXISTS traceparent" in second.sql
    assert "traceparent" not in first.sql  # SCHEMA itself (checksummed already) is unchanged
    await scratch_schema.execute(
        "INSERT INTO outbox (topic, aggregate_type, aggregate_id, type, payload, traceparent) "
        "VALUES ('t', 'order', 'o-1', 'x', '\\x00', '00-' || repeat('a', 32) || '-' "
        "|| repeat('b', 16) || '-01')"
    )
    assert (await scratch_schema.fetchval("SELECT traceparent FROM outbox")).endswith("-01")
    write(tmp_path, "0003_missing.sql", "-- include: shared.outbox:NO_SUCH_SCHEMA\n")
    with pytest.raises(MigrationError, match="has no NO_SUCH_SCHEMA"):
        load_migrations(tmp_path)


async def test_the_outbox_schema_refuses_a_table_with_another_bucket_count(
    scratch_schema: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    await scratch_schema.execute(
        "CREATE TABLE outbox (aggregate_id text, bucket smallint "
        "GENERATED ALWAYS AS ((hashtext(aggregate_id) & 2147483647) % 8) STORED)"
    )
    write(tmp_path, "0001_outbox.sql", "-- include: shared.outbox\n")
    with pytest.raises(asyncpg.RaiseError, match="BUCKETS changed"):
        await apply_migrations(scratch_schema, tmp_path)


async def test_a_superseded_checksum_is_accepted_and_replaced(
    scratch_schema: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    old = "CREATE TABLE t (id int);\nCREATE TABLE moved (id int);\n"
    write(tmp_path, "0001_t.sql", old)
    await apply_migrations(scratch_schema, tmp_path)
    old_checksum = hashlib.sha256(old.encode()).hexdigest()
    write(tmp_path, "0001_t.sql", f"-- supersedes: {old_checksum}\nCREATE TABLE t (id int);\n")
    write(tmp_path, "0002_moved.sql", "CREATE TABLE IF NOT EXISTS moved (id int);\n")

    assert await apply_migrations(scratch_schema, tmp_path) == ["0002_moved"]
    assert await apply_migrations(scratch_schema, tmp_path) == []
    (first, _) = load_migrations(tmp_path)
    recorded = await scratch_schema.fetchval(
        "SELECT checksum FROM schema_migration WHERE version = 1"
    )
    assert recorded == first.checksum

    write(tmp_path, "0001_t.sql", f"-- supersedes: {old_checksum}\nCREATE TABLE t (id bigint);\n")
    with pytest.raises(MigrationError, match="other content"):
        await apply_migrations(scratch_schema, tmp_path)


@pytest.mark.parametrize("service", ["orders", "donations"])
async def test_a_database_migrated_when_0001_held_the_outbox_still_migrates(
    scratch_schema: asyncpg.Connection[Any], service: str
) -> None:
    """Databases of earlier versions recorded 0001_init with the outbox DDL inside it
    (their checksum is the one 0001_init.sql says it supersedes) and have no 0002."""
    directory = Path(__file__).parents[2] / "services" / service / "migrations"
    first, *_ = load_migrations(directory)
    (earlier,) = first.supersedes
    await apply_migrations(scratch_schema, directory)
    await scratch_schema.execute(
        "UPDATE schema_migration SET checksum = $1 WHERE version = 1", earlier
    )
    # Such a database lacks 0002 only; later files (0010, ...) are on top of both.
    await scratch_schema.execute("DELETE FROM schema_migration WHERE version = 2")

    assert await apply_migrations(scratch_schema, directory) == ["0002_outbox"]
    recorded = await scratch_schema.fetchval(
        "SELECT checksum FROM schema_migration WHERE version = 1"
    )
    assert recorded == first.checksum
    await scratch_schema.execute(
        "INSERT INTO outbox (topic, aggregate_type, aggregate_id, type, payload) "
        "VALUES ('t', 'order', 'o-1', 'x', '\\x00')"
    )
    assert await scratch_schema.fetchval("SELECT count(*) FROM outbox") == 1


@pytest.mark.parametrize("service", ["orders", "donations", "charities"])
async def test_a_migrated_service_commits_its_outbox_and_log_rows_without_notify(
    scratch_schema: asyncpg.Connection[Any], service: str
) -> None:
    """A committing transaction that NOTIFYs holds a cluster-wide lock through its WAL
    flush: no write path may NOTIFY (the relay and the sequencer poll). Its own NOTIFY
    would reach this connection, which listens, with the commit's answer."""
    directory = Path(__file__).parents[2] / "services" / service / "migrations"
    await apply_migrations(scratch_schema, directory)
    heard: list[str] = []
    for channel in ("outbox", "log_pending"):
        await scratch_schema.add_listener(channel, lambda *args: heard.append(args[2]))
    tables = {
        r["relname"]
        for r in await scratch_schema.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        )
    }
    writes = 0
    async with scratch_schema.transaction():
        if "outbox" in tables:
            await scratch_schema.execute(
                "INSERT INTO outbox (topic, aggregate_type, aggregate_id, type, payload) "
                "VALUES ('t', 'order', 'o-1', 'x', '\\x00')"
            )
            writes += 1
        if "log_pending" in tables:
            await scratch_schema.execute(
                "CREATE TABLE logged_thing (k text PRIMARY KEY);"
                "CREATE TRIGGER logged_thing_log AFTER INSERT ON logged_thing"
                " REFERENCING NEW TABLE AS new FOR EACH STATEMENT"
                " EXECUTE FUNCTION log_enqueue('k');"
                "INSERT INTO logged_thing VALUES ('k-1')"
            )
            assert await scratch_schema.fetchval("SELECT count(*) FROM log_pending") == 1
            writes += 1
    await scratch_schema.fetchval("SELECT 1")  # any notification came before this answer
    await asyncio.sleep(0)  # and its callback ran
    assert writes == {"orders": 1, "donations": 2, "charities": 1}[service]
    assert heard == []
