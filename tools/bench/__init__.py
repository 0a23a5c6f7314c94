"""``make bench``: runs each benchmark module and prints ``bench <name> <value> <unit>``.

A module under ``tools/bench/`` exposes ``async def run() -> list[Figure]``; the whole
stack (``make run``) is up while they run. Figures are also written to
``bench-results.json``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from shared import db
from shared.kafka import BatchConsumer, Producer
from shared.settings import CommonSettings
from tools.bench.cpu import seconds_or_zero


async def ensure_database(settings: CommonSettings, name: str) -> None:
    """Creates the benchmark's own database if it does not exist yet."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(settings.dsn("postgres"))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_app(app: str, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    """One uvicorn process of ``app`` (``services.<name>.app:create_app``) on a free port
    with ``env``; returns it and its base URL once its /readyz answers 200."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1"],
        *["--port", str(port), "--no-access-log", "--log-level", "warning"],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get(base + "/readyz")).status_code == 200:
                    return server, base
            except httpx.TransportError:
                pass
            if server.returncode is not None or time.monotonic() > deadline:
                await stop_app(server)
                raise RuntimeError(f"{app} did not become ready")
            await asyncio.sleep(0.2)


async def stop_app(server: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if server.returncode is None:
        server.terminate()
    try:
        await asyncio.wait_for(server.wait(), timeout=15)
    except TimeoutError:
        server.kill()
        await server.wait()


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str

    def line(self) -> str:
        value = f"{self.value:.0f}" if abs(self.value) >= 100 else f"{self.value:.2f}"
        return f"bench {self.name} {value} {self.unit}"


async def backend_pids(pool: asyncpg.Pool[Any]) -> list[int]:
    """The server processes of every connection to the pool's database."""
    rows = await pool.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return [r["pid"] for r in rows]


@dataclass(frozen=True)
class Consumed:
    """What consume_timed measured, from the first batch to the last commit."""

    seconds: float
    batches: int
    cpu_s: float  # this Python process
    db_cpu_s: float  # the PostgreSQL backends serving the benchmark's database

    def us_per(self, events: int) -> tuple[float, float]:
        """(process, database) CPU microseconds per event."""
        return self.cpu_s / events * 1e6, self.db_cpu_s / events * 1e6


class FirstBatchTimer:
    """Wraps a consumer handler (plain or two-phase) and notes when the first batch came,
    with the CPU used so far by this process and by the database backends in ``pids``."""

    def __init__(self, inner: Any, pids: Sequence[int] = ()) -> None:
        self._inner = inner
        self._pids = pids
        self.first: float | None = None
        self.cpu_at_first = 0.0
        self.db_cpu_at_first: dict[int, float] = {}

    def prepare(self, records: Sequence[Any]) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
            self.cpu_at_first = time.process_time()
            self.db_cpu_at_first = {pid: seconds_or_zero(pid) for pid in self._pids}
        return self._inner.prepare(records) if hasattr(self._inner, "prepare") else records

    async def apply(self, prepared: Any) -> Any:
        if hasattr(self._inner, "apply"):
            return await self._inner.apply(prepared)
        return await self._inner(prepared)


async def consume_timed(
    *,
    bootstrap: str,
    topic: str,
    group: str,
    handler: Any,
    producer: Producer,
    total: int,
    max_records: int,
    timeout_s: float = 300,
    pool: asyncpg.Pool[Any] | None = None,
) -> Consumed:
    """Runs a BatchConsumer with ``handler`` until ``total`` records are committed.

    Returns the seconds from the first batch to the last commit, the batches used, and
    the CPU seconds spent meanwhile by this process and (with ``pool``) by the database
    backends serving the pool's database. CPU per event varies far less than events per
    second on a loaded machine.
    """
    pids = await backend_pids(pool) if pool is not None else []
    timed = FirstBatchTimer(handler, pids)
    consumer = BatchConsumer(
        bootstrap=bootstrap,
        topic=topic,
        group_id=group,
        handler=timed,
        producer=producer,
        max_records=max_records,
        handler_is_transient=db.is_transient,
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        deadline = time.monotonic() + timeout_s
        while consumer.records_done < total:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"consumer stalled at {consumer.records_done}/{total}")
            await asyncio.sleep(0.005)
        finished = time.perf_counter()
        cpu = time.process_time() - timed.cpu_at_first
        later = await backend_pids(pool) if pool is not None else []
        db_cpu = sum(seconds_or_zero(p) - timed.db_cpu_at_first.get(p, 0.0) for p in later)
    finally:
        await consumer.stop()
        await task
        await consumer.close()
    assert timed.first is not None
    return Consumed(finished - timed.first, consumer.batches_done, cpu, db_cpu)
