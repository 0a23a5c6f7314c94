"""Orders benchmarks: single and batch ingest over HTTP, and the outbox relay to Kafka.

The orders app runs as a separate uvicorn process (2 workers, as ``make run`` starts it)
against its own database
(``orders_bench``) with the ``bench.`` topic prefix, so the dev stack is untouched.

    .venv/bin/python -m tools.bench orders

``GFG_BENCH_ORDERS_DB`` and ``GFG_BENCH_TOPIC_PREFIX`` choose another database and topic
prefix; ``GFG_BENCH_ORDERS_PARTS`` (comma-separated, default ``single,batch,relay``) the parts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from services.orders.app import MIGRATIONS
from services.orders.config import Settings
from shared.auth import Role, issue_token
from shared.db import create_pool
from shared.events import ORDER_COMPLETED, TOPIC_ORDERS
from shared.kafka import ensure_topics, make_producer
from shared.migrations import migrate
from shared.outbox import OutboxRelay
from tools.bench import Figure, ensure_database, free_port
from tools.bench.cpu import process_seconds, sample

ROOT = Path(__file__).parents[2]
DATABASE = os.environ.get("GFG_BENCH_ORDERS_DB", "orders_bench")
TOPIC_PREFIX = os.environ.get("GFG_BENCH_TOPIC_PREFIX", "bench.")
PARTS = os.environ.get("GFG_BENCH_ORDERS_PARTS", "single,batch,relay").split(",")
SINGLE_SECONDS = 15
SINGLE_CONCURRENCY = 64
BATCHES = 40
BATCH_SIZE = 1000
BATCH_CONCURRENCY = 4
RELAY_ROWS = 100_000
SELLERS = [f"bench-seller-{n}" for n in range(50)]


def _order(run: str, n: int, *, completed: bool) -> dict[str, Any]:
    order: dict[str, Any] = {
        "order_id": f"{run}-{n}",
        "seller_id": SELLERS[n % len(SELLERS)],
        "currency": "CNY",
        "total_minor": 2 * 1999 + 500,
        "items": [
            {"item_id": "sku-1", "quantity": 2, "unit_price_minor": 1999},
            {"item_id": "sku-2", "quantity": 1, "unit_price_minor": 500},
        ],
        "placed_at": "2025-11-11T00:00:00Z",
    }
    if completed:
        order |= {"status": "completed", "completed_at": "2025-11-11T00:05:00Z"}
    return order


# wrk (C, Debian's package) drives single ingest: a Python client on these 2 cores would
# take the CPU it is meant to measure. Each request posts a new completed order.
_WRK_SCRIPT = """
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  run, token = args[1], args[2]
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"order_id":"%s-w%d-%d","seller_id":"bench-seller-%d","currency":"CNY",'
    .. '"total_minor":4498,"items":[{"item_id":"sku-1","quantity":2,"unit_price_minor":1999},'
    .. '{"item_id":"sku-2","quantity":1,"unit_price_minor":500}],'
    .. '"placed_at":"2025-11-11T00:00:00Z","status":"completed",'
    .. '"completed_at":"2025-11-11T00:05:00Z"}',
    run, tid, counter, counter % 50)
  return wrk.format("POST", "/v1/orders", headers, body)
end
"""


def _wrk_figure(output: str, label: str) -> float:
    """A latency percentile line of ``wrk --latency`` (e.g. ' 99%  203.17ms'), in ms."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == label:
            value = parts[1]
            for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
                if value.endswith(unit):
                    return float(value[: -len(unit)]) * factor
    raise ValueError(f"no {label} line in wrk output:\n{output}")


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def _prepare_database(settings: Settings) -> str:
    await ensure_database(settings, DATABASE)
    dsn = settings.dsn(DATABASE)
    await migrate(dsn, MIGRATIONS)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE order_refund, sales_order, outbox")
    finally:
        await conn.close()
    return dsn


def _spawn(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    workers = os.environ.get("GFG_ORDERS_WORKERS", "2")
    if os.environ.get("GFG_BENCH_SERVER") == "granian":
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "granian"),
                *["--interface", "asgi", "--factory", "--loop", "uvloop", "--no-ws"],
                *["--port", str(port), "--workers", workers, "--log-level", "warning"],
                "services.orders.app:create_app",
            ],
            cwd=ROOT,
            env=env,
        )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "services.orders.app:create_app",
            "--factory",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--workers",
            workers,
        ],
        cwd=ROOT,
        env=env,
    )


async def _start_app(port: int, secret: str) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "GFG_ORDERS_DB": DATABASE,
        "GFG_TOPIC_PREFIX": TOPIC_PREFIX,
        "GFG_JWT_SECRET": secret,
        "GFG_RELAY_ENABLED": "false",  # the relay is measured on its own below
        "GFG_LOG_LEVEL": "WARNING",
        "GFG_PG_POOL_MAX": "20",
    }
    process = _spawn(port, env)
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"orders app exited with {process.returncode}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    process.terminate()
    raise TimeoutError("orders app not ready in 60 s")


async def _drive(
    count: int, concurrency: int, send: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Runs ``send(n)`` for n < count over ``concurrency`` workers; returns (seconds, latencies)."""
    latencies: list[float] = []
    next_n = 0

    async def worker() -> None:
        nonlocal next_n
        while next_n < count:
            n = next_n
            next_n += 1
            started = time.perf_counter()
            await send(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def _server_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of the uvicorn process and its workers."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return process_seconds(pid) + sum(sample({"w": children}).values())


async def _bench_single(port: int, token: str, run: str, dsn: str, pid: int) -> list[Figure]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make bench installs it: apt-get install wrk)")
    cpu_before = _server_cpu_seconds(pid)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT)
        script.flush()
        process = await asyncio.create_subprocess_exec(
            "wrk", "-t2", f"-c{SINGLE_CONCURRENCY}", f"-d{SINGLE_SECONDS}s", "--latency",
            "-s", script.name, f"http://127.0.0.1:{port}", "--", run, token,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await process.communicate()
    cpu_seconds = _server_cpu_seconds(pid) - cpu_before
    output = out.decode()
    if process.returncode != 0 or "Non-2xx" in output:
        raise RuntimeError(f"wrk reported failures:\n{output}")
    conn = await asyncpg.connect(dsn)
    try:
        accepted = await conn.fetchval(
            "SELECT count(*) FROM sales_order WHERE order_id LIKE $1", f"{run}-w%"
        )
    finally:
        await conn.close()
    print(
        f"# single ingest: {accepted} orders in {SINGLE_SECONDS} s, {SINGLE_CONCURRENCY}"
        f" connections (wrk), p50 {_wrk_figure(output, '50%'):.1f} ms,"
        f" server CPU {cpu_seconds:.2f} s",
        file=sys.stderr,
    )
    return [
        Figure("orders.single_ingest_per_s", accepted / SINGLE_SECONDS, "orders/s"),
        Figure("orders.single_ingest_p99_ms", _wrk_figure(output, "99%"), "ms"),
        # The server's CPU (both workers) per accepted order: robust on a loaded machine.
        Figure("orders.single_ingest_cpu_ms", cpu_seconds * 1000 / max(accepted, 1), "ms"),
    ]


async def _bench_batch(url: str, headers: dict[str, str], run: str, pid: int) -> list[Figure]:
    bodies = [
        orjson.dumps(
            {"orders": [_order(f"{run}-b{b}", n, completed=True) for n in range(BATCH_SIZE)]}
        )
        for b in range(BATCHES)
    ]
    send_headers = headers | {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def send(b: int) -> None:
            response = await client.post(
                "/v1/orders/batch", content=bodies[b], headers=send_headers
            )
            if response.status_code != 200:
                raise RuntimeError(f"POST /v1/orders/batch: {response.status_code}")

        cpu_before = _server_cpu_seconds(pid)
        seconds, latencies = await _drive(BATCHES, BATCH_CONCURRENCY, send)
        cpu_seconds = _server_cpu_seconds(pid) - cpu_before
    return [
        Figure("orders.batch_ingest_per_s", BATCHES * BATCH_SIZE / seconds, "orders/s"),
        Figure("orders.batch_ingest_p99_ms", _p99(latencies), "ms"),
        # The server's CPU (both workers) per 1,000 orders: robust on a loaded machine.
        Figure(
            "orders.batch_ingest_cpu_ms",
            cpu_seconds * 1000 * 1000 / (BATCHES * BATCH_SIZE),
            "ms/1k orders",
        ),
    ]


async def _bench_relay(settings: Settings, dsn: str) -> list[Figure]:
    topic = settings.topic(TOPIC_ORDERS)
    await ensure_topics(
        settings.kafka_bootstrap,
        [topic],
        settings.topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        min_insync=settings.kafka_min_insync,
    )
    pool = await create_pool(dsn, max_size=4)
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await pool.execute("TRUNCATE outbox")
        snapshot = _order("relay", 0, completed=True)
        records = []
        for n in range(RELAY_ROWS):
            order_id = f"relay-{uuid.uuid4().hex[:16]}-{n}"
            payload = orjson.dumps(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": ORDER_COMPLETED,
                    "schema_version": 1,
                    "occurred_at": "2025-11-11T00:05:00Z",
                    "order": snapshot | {"order_id": order_id},
                }
            )
            records.append((topic, "order", order_id, ORDER_COMPLETED, payload))
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "outbox",
                records=records,
                columns=["topic", "aggregate_type", "aggregate_id", "type", "payload"],
            )
        relay = OutboxRelay(service="orders-bench", dsn=dsn, pool=pool, producer=producer)
        started = time.perf_counter()
        task = asyncio.create_task(relay.run())
        try:
            while relay.published < RELAY_ROWS:
                if task.done():
                    task.result()
                    raise RuntimeError("relay stopped early")
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
        finally:
            await relay.stop()
            await task
        return [Figure("orders.relay_events_per_s", RELAY_ROWS / seconds, "events/s")]
    finally:
        await producer.stop()
        await pool.close()


async def run() -> list[Figure]:
    os.environ.setdefault("GFG_JWT_SECRET", "bench-secret-" + uuid.uuid4().hex)
    os.environ["GFG_TOPIC_PREFIX"] = TOPIC_PREFIX
    settings = Settings(orders_db=DATABASE)
    dsn = await _prepare_database(settings)
    secret = settings.hs256_secret()
    token = issue_token(secret, Role.STOREFRONT, SELLERS)
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()
    process = await _start_app(port, secret)
    run_id = uuid.uuid4().hex[:8]
    figures: list[Figure] = []
    try:
        url = f"http://127.0.0.1:{port}"
        if "single" in PARTS:
            figures += await _bench_single(port, token, run_id, dsn, process.pid)
        if "batch" in PARTS:
            figures += await _bench_batch(url, headers, run_id, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    if "relay" in PARTS:
        figures += await _bench_relay(settings, dsn)
    return figures
