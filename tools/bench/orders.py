"""Orders benchmarks: single and batch ingest over HTTP, and the outbox relay to Kafka.

The orders app runs as a separate uvicorn process against its own database
(``orders_bench``) with the ``bench.`` topic prefix, so the dev stack is untouched.

    .venv/bin/python -m tools.bench orders
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
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
from shared.events import TOPIC_ORDERS
from shared.kafka import ensure_topics, make_producer
from shared.migrations import migrate
from shared.outbox import OutboxRelay
from tests.support import free_port
from tools.bench import Figure

ROOT = Path(__file__).parents[2]
DATABASE = "orders_bench"
TOPIC_PREFIX = "bench."
SINGLE_ORDERS = 20_000
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


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client: one connection, one request at a time.

    httpx spends more CPU per request than the server does (at 64 connections it tops
    out near 150 requests/s on this machine), so it would measure itself, not the app.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self._host, self._port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self._host}\r\n{self._head}"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def _prepare_database(settings: Settings) -> str:
    admin = await asyncpg.connect(settings.dsn("postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    dsn = settings.dsn(DATABASE)
    await migrate(dsn, MIGRATIONS)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE order_refund, sales_order, outbox")
    finally:
        await conn.close()
    return dsn


def _spawn(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
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


async def _bench_single(port: int, headers: dict[str, str], run: str) -> list[Figure]:
    bodies = [orjson.dumps(_order(run, n, completed=True)) for n in range(SINGLE_ORDERS)]
    idle = [RawHttp("127.0.0.1", port, headers) for _ in range(SINGLE_CONCURRENCY)]
    clients = list(idle)

    async def send(n: int) -> None:
        client = idle.pop()
        status, body = await client.request("POST", "/v1/orders", bodies[n])
        idle.append(client)
        if status != 201:
            raise RuntimeError(f"POST /v1/orders: {status} {body[:300]!r}")

    try:
        seconds, latencies = await _drive(SINGLE_ORDERS, SINGLE_CONCURRENCY, send)
    finally:
        for client in clients:
            await client.close()
    return [
        Figure("orders.single_ingest_per_s", SINGLE_ORDERS / seconds, "orders/s"),
        Figure("orders.single_ingest_p99_ms", _p99(latencies), "ms"),
    ]


async def _bench_batch(url: str, headers: dict[str, str], run: str) -> list[Figure]:
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

        seconds, latencies = await _drive(BATCHES, BATCH_CONCURRENCY, send)
    return [
        Figure("orders.batch_ingest_per_s", BATCHES * BATCH_SIZE / seconds, "orders/s"),
        Figure("orders.batch_ingest_p99_ms", _p99(latencies), "ms"),
    ]


async def _bench_relay(settings: Settings, dsn: str) -> list[Figure]:
    topic = settings.topic(TOPIC_ORDERS)
    await ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions)
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
                    "type": "order.completed",
                    "schema_version": 1,
                    "occurred_at": "2025-11-11T00:05:00Z",
                    "order": snapshot | {"order_id": order_id},
                }
            )
            records.append((topic, "order", order_id, "order.completed", payload))
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
    secret = settings.jwt_secret.get_secret_value()
    headers = {"Authorization": f"Bearer {issue_token(secret, Role.STOREFRONT, SELLERS)}"}
    port = free_port()
    process = await _start_app(port, secret)
    run_id = uuid.uuid4().hex[:8]
    figures: list[Figure] = []
    try:
        url = f"http://127.0.0.1:{port}"
        figures += await _bench_single(port, headers, run_id)
        figures += await _bench_batch(url, headers, run_id)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    figures += await _bench_relay(settings, dsn)
    return figures
