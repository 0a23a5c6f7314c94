from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.migrations import MigrationError, apply_migrations
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
