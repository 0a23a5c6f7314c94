"""Charities benchmarks: folding the ledger into totals, and serving totals to dashboards.

- ``charities.fold_entries_per_s``: 100k ledger entries (90 % on one hot project, the rest
  over 100 others, 5 % reversals, 1000 sellers) pre-loaded onto ``bench.donations.ledger``,
  then folded by the service's own BatchConsumer + handler; timed from the first batch
  handed to the handler to the last offset commit. The totals are checked against the
  produced entries afterwards. ``charities.fold_cpu_us_per_entry`` and
  ``charities.fold_db_cpu_us_per_entry``: CPU microseconds per entry of the folding
  process and of the PostgreSQL backends serving it (from /proc).
- ``charities.totals_200_per_s`` / ``charities.totals_304_per_s`` / ``_p50_ms`` / ``_p99_ms``:
  ``GET /v1/totals`` against one service process (uvicorn, API only), load from ``wrk``
  (``apt-get install wrk``; an httpx load generator otherwise), 32 connections.

- ``charities.totals_304_two_nodes_per_s``: the same 304 load on two service processes at
  once, one reading its totals on the primary and one on the hot standby (a wrk per
  process, the sum of their rates); ``_cpu_s_per_100k`` is the two processes' CPU time per
  100k answers. Measured when a standby answers on ``GFG_PG_STANDBY_PORT`` (55433):
  ``make bench REPLICA=1`` starts one; without it the figure is skipped with a note. The
  two processes must give the same ETag for the same data, or the figure is not reported.

``GFG_BENCH_CHARITIES_FOLD_ONLY=1`` measures the fold alone and starts no service process.

Runs in its own database ``charities_bench`` and on ``bench.``-prefixed topics, so it never
touches the data of ``make run`` or of the tests (``GFG_BENCH_CHARITIES_DB`` and
``GFG_BENCH_TOPIC_PREFIX`` choose others).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.charities.app import MIGRATIONS
from services.charities.config import Settings
from services.charities.consumer import LedgerFolder
from services.charities.schemas import CharityCreate, ProjectCreate
from services.charities.service import CharityService
from shared.db import create_pool
from shared.events import DONATION_RECORDED, TOPIC_LEDGER
from shared.kafka import ensure_topics, make_producer
from shared.migrations import migrate
from tools.bench import Figure, consume_timed, ensure_database, start_app, stop_app
from tools.bench.cpu import process_seconds

DATABASE = os.environ.get("GFG_BENCH_CHARITIES_DB", "charities_bench")
TOPIC_PREFIX = os.environ.get("GFG_BENCH_TOPIC_PREFIX", "bench.")
ENTRIES = 100_000
PROJECTS = 101
SELLERS = 1000
HOT_SHARE = 0.9
HTTP_SECONDS = 6
CONNECTIONS = 32


def _settings() -> Settings:
    return Settings(
        charities_db=DATABASE,
        topic_prefix=TOPIC_PREFIX,
        jwt_secret=os.environ.get("GFG_JWT_SECRET", "bench-secret-not-for-production-0123456789"),
        log_level="WARNING",
    )


async def _projects(pool: asyncpg.Pool[Any]) -> list[uuid.UUID]:
    """The bench's charity and projects, created once (their natural keys make it idempotent)."""
    registry = CharityService(pool, totals_cache_seconds=0)
    charity, _ = await registry.create_charity(
        CharityCreate(name="Bench charity", registration_no="BENCH-CHARITY-1")
    )
    ids = []
    for n in range(PROJECTS):
        project, _ = await registry.create_project(
            str(charity.charity_id),
            ProjectCreate(name=f"bench project {n:03d}", currency="CNY", goal_minor=10_000_000),
        )
        ids.append(project.project_id)
    return ids


def _entries(projects: list[uuid.UUID]) -> list[tuple[bytes, bytes, uuid.UUID, bool, int]]:
    """(key, value, project, is_accrual, amount) of ENTRIES donation.recorded events."""
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(days=2)
    out = []
    for n in range(ENTRIES):
        project = projects[0] if rng.random() < HOT_SHARE else rng.choice(projects[1:])
        is_accrual = rng.random() >= 0.05
        amount = rng.randint(1, 500)
        order_id = f"bench-{uuid.uuid4().hex[:16]}"
        event = {
            "event_id": str(uuid.uuid4()),
            "type": DONATION_RECORDED,
            "schema_version": 1,
            "occurred_at": datetime.now(UTC).isoformat(),
            "entry": {
                "entry_id": str(uuid.uuid4()),
                "order_id": order_id,
                "seller_id": f"bench-seller-{rng.randrange(SELLERS)}",
                "project_id": str(project),
                "kind": "accrual" if is_accrual else "reversal",
                "amount_minor": amount,
                "currency": "CNY",
                "rule_version": 1,
                "recorded_at": (start + timedelta(seconds=n * 2)).isoformat(),
            },
        }
        out.append((order_id.encode(), orjson.dumps(event), project, is_accrual, amount))
    return out


async def _start_group_at_end(settings: Settings, topic: str, group: str) -> None:
    """A fresh group would start at the topic's beginning (earlier runs): start it at the end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        await consumer.commit(end)
    finally:
        await consumer.stop()


async def bench_fold(settings: Settings, pool: asyncpg.Pool[Any]) -> list[Figure]:
    topic = settings.topic(TOPIC_LEDGER)
    await ensure_topics(
        settings.kafka_bootstrap,
        [topic],
        settings.topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        min_insync=settings.kafka_min_insync,
    )
    projects = await _projects(pool)
    before = {
        r["project_id"]: r["net"]
        for r in await pool.fetch(
            "SELECT project_id, donated_minor - reversed_minor AS net FROM project_total"
            " WHERE project_id = ANY($1::uuid[])",
            projects,
        )
    }
    entries = _entries(projects)
    group = f"bench.charities.fold.{uuid.uuid4().hex[:8]}"
    await _start_group_at_end(settings, topic, group)

    producer = make_producer(settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value, *_ in entries]
        await asyncio.gather(*futures)

        consumed = await consume_timed(
            bootstrap=settings.kafka_bootstrap,
            topic=topic,
            group=group,
            handler=LedgerFolder(pool),
            producer=producer,
            total=ENTRIES,
            max_records=settings.ledger_batch_max,
            pool=pool,
        )
    finally:
        await producer.stop()

    expected: dict[uuid.UUID, int] = dict.fromkeys(projects, 0)
    for _, _, project, is_accrual, amount in entries:
        expected[project] += amount if is_accrual else -amount
    after = {
        r["project_id"]: r["net"]
        for r in await pool.fetch(
            "SELECT project_id, donated_minor - reversed_minor AS net FROM project_total"
            " WHERE project_id = ANY($1::uuid[])",
            projects,
        )
    }
    wrong = [p for p in projects if after.get(p, 0) - before.get(p, 0) != expected[p]]
    if wrong:
        raise AssertionError(f"totals differ from the produced ledger for {len(wrong)} projects")
    cpu_us, db_us = consumed.us_per(ENTRIES)
    print(
        f"# fold: {ENTRIES} entries in {consumed.batches} batches, {consumed.seconds:.2f} s,"
        f" totals exact; CPU {cpu_us:.0f} us/entry, database {db_us:.0f} us/entry",
        file=sys.stderr,
    )
    return [
        Figure("charities.fold_entries_per_s", ENTRIES / consumed.seconds, "entries/s"),
        Figure("charities.fold_cpu_us_per_entry", cpu_us, "us"),
        Figure("charities.fold_db_cpu_us_per_entry", db_us, "us"),
    ]


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, headers: dict[str, str]) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run."""
    args = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{HTTP_SECONDS}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        [*args, url], capture_output=True, text=True, check=True, timeout=HTTP_SECONDS + 30
    ).stdout
    if "Non-2xx or 3xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        match = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", output)
        assert match is not None, output
        return float(match.group(1)) * _UNITS[match.group(2)]

    return rate, percentile("50"), percentile("99")


async def _httpx_load(url: str, headers: dict[str, str], status: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    stop = time.monotonic() + HTTP_SECONDS
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = await client.get(url, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != status:
                    raise RuntimeError(f"{url}: HTTP {response.status_code}")

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.monotonic() - began
    latencies.sort()
    return (
        len(latencies) / elapsed,
        latencies[len(latencies) // 2],
        latencies[int(len(latencies) * 0.99)],
    )


CHARITIES_APP = "services.charities.app:create_app"


async def bench_http(settings: Settings) -> list[Figure]:
    env = {
        **os.environ,
        "GFG_CHARITIES_DB": DATABASE,
        "GFG_TOPIC_PREFIX": TOPIC_PREFIX,
        "GFG_JWT_SECRET": settings.hs256_secret(),
        "GFG_CHARITIES_CONSUME_LEDGER": "false",
        "GFG_LOG_LEVEL": "WARNING",
    }
    server, base = await start_app(CHARITIES_APP, env)
    try:
        async with httpx.AsyncClient() as client:
            first = await client.get(base + "/v1/totals")
            etag = first.headers["etag"]
            items = len(first.json()["items"])
        url = base + "/v1/totals"
        use_wrk = shutil.which("wrk") is not None
        if use_wrk:
            ok_rate, ok_p50, ok_p99 = await asyncio.to_thread(_wrk, url, {})
            rate, p50, p99 = await asyncio.to_thread(_wrk, url, {"If-None-Match": etag})
        else:
            ok_rate, ok_p50, ok_p99 = await _httpx_load(url, {}, 200)
            rate, p50, p99 = await _httpx_load(url, {"If-None-Match": etag}, 304)
        print(
            f"# http: /v1/totals with {items} projects ({len(first.content)} bytes), "
            f"{CONNECTIONS} connections, load by {'wrk' if use_wrk else 'httpx'}; "
            f"200s p50 {ok_p50:.2f} ms p99 {ok_p99:.2f} ms",
            file=sys.stderr,
        )
    finally:
        await stop_app(server)
    return [
        Figure("charities.totals_200_per_s", ok_rate, "req/s"),
        Figure("charities.totals_304_per_s", rate, "req/s"),
        Figure("charities.totals_304_p50_ms", p50, "ms"),
        Figure("charities.totals_304_p99_ms", p99, "ms"),
    ]


def standby_dsn(settings: Settings) -> str:
    port = os.environ.get("GFG_PG_STANDBY_PORT", "55433")
    return f"postgresql://{settings.pg_user}@{settings.pg_host}:{port}/{DATABASE}"


async def standby_problem(settings: Settings) -> str | None:
    """Why no standby can serve the bench (None: one can, and it has the primary's data)."""
    dsn = standby_dsn(settings)
    try:
        standby: asyncpg.Connection[Any] = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"no standby at {dsn} ({type(exc).__name__})"
    try:
        if not await standby.fetchval("SELECT pg_is_in_recovery()"):
            return f"{dsn} is not a standby"
        primary: asyncpg.Connection[Any] = await asyncpg.connect(settings.dsn(DATABASE))
        try:
            version = await primary.fetchval("SELECT version FROM change_clock")
        finally:
            await primary.close()
        deadline = time.monotonic() + 60
        while await standby.fetchval("SELECT version FROM change_clock") != version:
            if time.monotonic() > deadline:
                return f"the standby at {dsn} did not reach the primary's data in 60 s"
            await asyncio.sleep(0.1)
        return None
    finally:
        await standby.close()


async def bench_two_nodes(settings: Settings) -> list[Figure]:
    """``GET /v1/totals`` with a current ETag on two processes at once: one reading the
    primary, one the standby; a wrk each, rates summed."""
    env = {
        **os.environ,
        "GFG_CHARITIES_DB": DATABASE,
        "GFG_TOPIC_PREFIX": "bench.",
        "GFG_JWT_SECRET": settings.hs256_secret(),
        "GFG_CHARITIES_CONSUME_LEDGER": "false",
        "GFG_LOG_LEVEL": "WARNING",
    }
    env.pop("GFG_CHARITIES_READ_DSN", None)
    nodes: list[tuple[asyncio.subprocess.Process, str]] = []
    try:
        nodes.append(await start_app(CHARITIES_APP, env))
        nodes.append(
            await start_app(CHARITIES_APP, {**env, "GFG_CHARITIES_READ_DSN": standby_dsn(settings)})
        )
        urls = [base + "/v1/totals" for _, base in nodes]
        async with httpx.AsyncClient() as client:
            answers = [await client.get(url) for url in urls]
        etags = {answer.headers["etag"] for answer in answers}
        if len(etags) != 1 or answers[0].content != answers[1].content:
            raise AssertionError(f"primary and standby nodes disagree: ETags {sorted(etags)}")
        headers = {"If-None-Match": etags.pop()}
        cpu_before = sum(process_seconds(server.pid) for server, _ in nodes)
        if shutil.which("wrk") is not None:
            results = await asyncio.gather(*(asyncio.to_thread(_wrk, url, headers) for url in urls))
        else:
            results = await asyncio.gather(*(_httpx_load(url, headers, 304) for url in urls))
        cpu = sum(process_seconds(server.pid) for server, _ in nodes) - cpu_before
    finally:
        for server, _ in nodes:
            await stop_app(server)
    rate = sum(r[0] for r in results)
    answered = rate * HTTP_SECONDS
    print(
        f"# two nodes: {' + '.join(f'{r[0]:.0f}' for r in results)} req/s "
        f"(primary + standby), p99 {max(r[2] for r in results):.2f} ms, "
        f"{cpu:.2f} CPU s for ~{answered:.0f} answers",
        file=sys.stderr,
    )
    return [
        Figure("charities.totals_304_two_nodes_per_s", rate, "req/s"),
        Figure("charities.totals_304_two_nodes_cpu_s_per_100k", cpu / answered * 100_000, "s"),
    ]


async def run() -> list[Figure]:
    settings = _settings()
    await ensure_database(settings, DATABASE)
    await migrate(settings.dsn(DATABASE), MIGRATIONS)
    pool = await create_pool(settings.dsn(DATABASE), min_size=2, max_size=4)
    try:
        figures = await bench_fold(settings, pool)
    finally:
        await pool.close()
    if os.environ.get("GFG_BENCH_CHARITIES_FOLD_ONLY"):
        return figures  # the fold alone: no service processes (a helper's A/B runs)
    figures += await bench_http(settings)
    problem = await standby_problem(settings)
    if problem is not None:
        print(f"# charities two nodes skipped: {problem} (make bench REPLICA=1)", file=sys.stderr)
        return figures
    return figures + await bench_two_nodes(settings)
