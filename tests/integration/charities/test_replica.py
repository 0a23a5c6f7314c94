"""The totals reads on a hot standby: a private primary and standby (deploy/postgres/pg.sh
start, standby-start) on free ports with their data under test-artifacts/, one charities
app on the primary and one reading its totals from the standby.

What a client moving between the two may rely on: once the standby has replayed a
version, both answer it with the same bytes and the same ETag (each side's ETag is 304 on
the other); a standby that has not replayed a version never answers 304 to its ETag, but
200 with the older version it has; writes and the ledger consumer use the primary only.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.charities.app import create_app
from services.charities.config import Settings
from services.charities.replica import Reads
from services.charities.service import CharityService
from shared.db import Pool, create_pool
from shared.events import TOPIC_LEDGER
from shared.kafka import make_producer
from tests.conftest import bearer, unique
from tests.integration.charities.helpers import fold_directly, ledger_entry, new_project, produce
from tests.servers import PG_SH, free_ports, keep_logs_and_remove, make_folder, run_script
from tests.support import eventually

DATABASE = "charities_replica"
TOTALS = "/v1/totals"


@dataclass(frozen=True)
class Pair:
    """A private primary and its hot standby."""

    folder: Path
    env: dict[str, str]
    primary_port: int
    standby_port: int

    def dsn(self, port: int) -> str:
        return f"postgresql://gfg@127.0.0.1:{port}/{DATABASE}"

    async def pg(self, action: str) -> None:
        assert self.env["GFG_PG_STANDBY_VAR"].startswith(str(self.folder))
        await run_script(self.folder, self.env, PG_SH, action)


@pytest.fixture(scope="module")
async def pair() -> AsyncIterator[Pair]:
    folder = make_folder("standby")
    primary_port, standby_port = free_ports(2)
    env = dict(
        os.environ,
        GFG_PG_VAR=str(folder / "pg"),
        GFG_PG_PORT=str(primary_port),
        GFG_PG_DATABASES=DATABASE,
        GFG_PG_STANDBY_VAR=str(folder / "pg-standby"),
        GFG_PG_STANDBY_PORT=str(standby_port),
        GFG_KAFKA_VAR=str(folder / "kafka"),  # unused; run_script checks every data folder
    )
    servers = Pair(folder, env, primary_port, standby_port)
    try:
        await servers.pg("start")
        await servers.pg("standby-start")
        yield servers
    finally:
        try:
            await servers.pg("standby-stop")
        finally:
            try:
                await servers.pg("stop")
            finally:
                standby = (folder / "pg-standby").resolve()
                log = standby / "postgres.log"
                if log.exists():
                    logs = folder.parent / "private-logs"
                    logs.mkdir(exist_ok=True)
                    shutil.copyfile(log, logs / f"{folder.name}-standby-postgres.log")
                if standby != folder / "pg-standby":
                    shutil.rmtree(standby, ignore_errors=True)
                keep_logs_and_remove(folder)


@pytest.fixture(scope="module")
def topic_prefix() -> str:
    return f"{os.environ['GFG_TOPIC_PREFIX']}{unique('replica')}."


def _settings(pair: Pair, topic_prefix: str, *, replica: bool) -> Settings:
    return Settings(
        pg_port=pair.primary_port,
        charities_db=DATABASE,
        topic_prefix=topic_prefix,
        totals_cache_seconds=0.0,
        charities_read_dsn=SecretStr(pair.dsn(pair.standby_port)) if replica else None,
    )


@pytest.fixture(scope="module")
async def primary_app(pair: Pair, topic_prefix: str) -> AsyncIterator[FastAPI]:
    app = create_app(_settings(pair, topic_prefix, replica=False), consume=False)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
async def replica_app(
    pair: Pair, topic_prefix: str, primary_app: FastAPI
) -> AsyncIterator[FastAPI]:
    """Reads its totals on the standby; the only ledger consumer of the two."""
    app = create_app(_settings(pair, topic_prefix, replica=True), consume=True)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def on_primary(primary_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=primary_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://primary") as client:
        yield client


@pytest.fixture
async def on_replica(replica_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=replica_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
        yield client


@pytest.fixture
async def standby(pair: Pair) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A superuser connection to the standby (to pause and resume its replay)."""
    conn = await asyncpg.connect(pair.dsn(pair.standby_port))
    try:
        yield conn
    finally:
        await conn.execute("SELECT pg_wal_replay_resume()")
        await conn.close()


def etag_of(response: httpx.Response) -> str:
    etag: str = response.headers["etag"]
    return etag


def _fallbacks() -> float:
    return REGISTRY.get_sample_value("gfg_charities_replica_fallbacks_total") or 0.0


def _pool(app: FastAPI) -> Pool:
    pool: Pool = app.state.pool
    return pool


def _reads(app: FastAPI) -> Reads:
    service: CharityService = app.state.service
    return service.reads


async def _same_on_both(
    on_primary: httpx.AsyncClient, on_replica: httpx.AsyncClient, path: str
) -> tuple[httpx.Response, httpx.Response]:
    """Both answers once the standby has caught up with the primary's for ``path``."""

    async def both() -> tuple[httpx.Response, httpx.Response]:
        return await on_primary.get(path), await on_replica.get(path)

    def equal(answers: tuple[httpx.Response, httpx.Response]) -> bool:
        primary, replica = answers
        return (
            primary.status_code == replica.status_code == 200
            and primary.headers["etag"] == replica.headers["etag"]
        )

    primary, replica = await eventually(both, equal)
    assert replica.content == primary.content
    return primary, replica


async def _pause(standby: asyncpg.Connection[Any]) -> None:
    await standby.execute("SELECT pg_wal_replay_pause()")

    async def state() -> str:
        value: str = await standby.fetchval("SELECT pg_get_wal_replay_pause_state()")
        return value

    await eventually(state, lambda s: s == "paused")


async def test_the_pools_are_the_primary_and_the_standby(
    primary_app: FastAPI, replica_app: FastAPI
) -> None:
    reads = _reads(replica_app)
    assert reads.replica is not None
    assert await reads.replica.fetchval("SELECT pg_is_in_recovery()") is True
    assert await reads.primary.fetchval("SELECT pg_is_in_recovery()") is False
    assert _reads(primary_app).replica is None


async def test_standby_catches_up_and_serves_the_primarys_totals(
    primary_app: FastAPI, on_primary: httpx.AsyncClient, on_replica: httpx.AsyncClient
) -> None:
    charity_id, project_id = await new_project(on_primary, goal_minor=50_000)
    events = [ledger_entry(project_id, 100 + n, seller_id=f"seller-{n % 3}") for n in range(20)]
    assert await fold_directly(_pool(primary_app), events) == 20

    for path in (
        TOTALS,
        f"/v1/projects/{project_id}/totals",
        f"/v1/charities/{charity_id}/totals",
    ):
        primary, replica = await _same_on_both(on_primary, on_replica, path)
        assert replica.json()["as_of"] == primary.json()["as_of"]
        # each side's ETag is current on the other
        for client, etag in ((on_replica, primary.headers["etag"]), (on_primary, etag_of(replica))):
            again = await client.get(path, headers={"If-None-Match": etag})
            assert again.status_code == 304, (path, again.status_code)
    project = (await on_replica.get(f"/v1/projects/{project_id}/totals")).json()
    assert project["donated_minor"] == sum(100 + n for n in range(20))
    assert project["seller_count"] == 3


async def test_a_paused_standby_never_answers_304_to_a_newer_etag(
    primary_app: FastAPI,
    replica_app: FastAPI,
    on_primary: httpx.AsyncClient,
    on_replica: httpx.AsyncClient,
    standby: asyncpg.Connection[Any],
) -> None:
    _, project_id = await new_project(on_primary)
    await fold_directly(_pool(primary_app), [ledger_entry(project_id, 700)])
    path = f"/v1/projects/{project_id}/totals"
    old_project, _ = await _same_on_both(on_primary, on_replica, path)
    old_all, _ = await _same_on_both(on_primary, on_replica, TOTALS)

    await _pause(standby)
    await fold_directly(_pool(primary_app), [ledger_entry(project_id, 55)])
    new_project_answer = await on_primary.get(path)
    new_all = await on_primary.get(TOTALS)
    assert new_project_answer.json()["donated_minor"] == 755
    assert etag_of(new_all) != etag_of(old_all)

    lag = await _reads(replica_app).lag()
    assert lag.in_recovery
    assert lag.bytes_behind > 0

    for newer, older in ((new_project_answer, old_project), (new_all, old_all)):
        url = newer.url.path
        stale = await on_replica.get(url, headers={"If-None-Match": etag_of(newer)})
        # 200 with the version the standby has: its own ETag, bytes and as_of
        assert stale.status_code == 200
        assert etag_of(stale) == etag_of(older)
        assert stale.content == older.content
        assert stale.json()["as_of"] == older.json()["as_of"]
        assert stale.json()["as_of"] <= newer.json()["as_of"]
        # and the older ETag is still current there
        held = await on_replica.get(url, headers={"If-None-Match": etag_of(older)})
        assert held.status_code == 304

    # A project created while the standby lags is answered from the primary, not a 404.
    charity_id, fresh = await new_project(on_primary)
    for url in (f"/v1/projects/{fresh}/totals", f"/v1/charities/{charity_id}/totals"):
        answer = await on_replica.get(url)
        assert answer.status_code == 200, answer.text
        assert answer.content == (await on_primary.get(url)).content

    await standby.execute("SELECT pg_wal_replay_resume()")
    url = new_project_answer.url.path

    async def revalidate() -> int:
        answer = await on_replica.get(url, headers={"If-None-Match": etag_of(new_project_answer)})
        return answer.status_code

    await eventually(revalidate, lambda status: status == 304)
    # /v1/totals has moved on (the fresh project): equal on both again, and newer
    caught_up, _ = await _same_on_both(on_primary, on_replica, TOTALS)
    assert _version(caught_up) > _version(new_all) > _version(old_all)
    caught = await eventually(_reads(replica_app).lag, lambda lag: lag.bytes_behind == 0)
    assert caught.seconds_behind == 0.0


def _version(response: httpx.Response) -> int:
    """The data version in ``GET /v1/totals``'s ETag (``"v<n>"``)."""
    return int(etag_of(response).strip('"').removeprefix("v"))


async def test_writes_and_the_consumer_use_the_primary(
    pair: Pair,
    topic_prefix: str,
    replica_app: FastAPI,
    on_primary: httpx.AsyncClient,
    on_replica: httpx.AsyncClient,
) -> None:
    # registry writes through the app whose reads are on the standby
    charity_id, project_id = await new_project(on_replica)
    admin = bearer("admin")
    closed = await on_replica.post(f"/v1/projects/{project_id}/close", headers=admin)
    assert closed.status_code == 200, closed.text
    primary = await asyncpg.connect(pair.dsn(pair.primary_port))
    try:
        status = await primary.fetchval(
            "SELECT status FROM project WHERE project_id = $1", uuid.UUID(project_id)
        )
    finally:
        await primary.close()
    assert status == "closed"

    # the ledger consumer (only the replica app runs one) folds into the primary
    producer = make_producer(replica_app.state.settings.kafka_bootstrap)
    await producer.start()
    try:
        await produce(producer, f"{topic_prefix}{TOPIC_LEDGER}", [ledger_entry(project_id, 321)])
    finally:
        await producer.stop()

    async def donated() -> int:
        async with _reads(replica_app).primary.acquire() as conn:
            value: int = await conn.fetchval(
                "SELECT coalesce(sum(donated_minor), 0)::bigint FROM project_total"
                " WHERE project_id = $1",
                uuid.UUID(project_id),
            )
        return value

    await eventually(donated, lambda value: value == 321)
    path = f"/v1/charities/{charity_id}/totals"
    primary_answer, _ = await _same_on_both(on_primary, on_replica, path)
    assert primary_answer.json()["items"][0]["donated_minor"] == 321


async def test_readiness_reports_the_replica(on_replica: httpx.AsyncClient) -> None:
    ready = await on_replica.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert "postgres_replica" in ready.json()["checks"]
    metrics = (await on_replica.get("/metrics")).text
    assert "gfg_charities_replica_lag_seconds" in metrics


async def test_reads_fall_back_to_the_primary_when_the_replica_is_down(
    primary_app: FastAPI, on_primary: httpx.AsyncClient
) -> None:
    (nobody,) = free_ports(1)
    # min_size 0: the pool connects on first use, to a port nothing listens on
    dead = await create_pool(f"postgresql://gfg@127.0.0.1:{nobody}/{DATABASE}", min_size=0)
    try:
        service: CharityService = primary_app.state.service
        reads = Reads(service.reads.primary, dead)
        shadow = CharityService(service.reads.primary, totals_cache_seconds=0.0)
        shadow.reads = reads
        _, project_id = await new_project(on_primary)
        before = _fallbacks()
        cached = await shadow.project_totals(project_id)
        assert _fallbacks() == before + 1
        assert cached.body == (await on_primary.get(f"/v1/projects/{project_id}/totals")).content
        with pytest.raises(ConnectionRefusedError):
            await reads.lag()
    finally:
        await dead.close()
