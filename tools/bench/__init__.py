"""``make bench``: runs each benchmark module and prints ``bench <name> <value> <unit>``.

A module under ``tools/bench/`` exposes ``async def run() -> list[Figure]``; the whole
stack (``make run``) is up while they run. Figures are also written to
``bench-results.json``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared import db
from shared.kafka import BatchConsumer, Producer
from shared.settings import CommonSettings


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


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str

    def line(self) -> str:
        value = f"{self.value:.0f}" if abs(self.value) >= 100 else f"{self.value:.2f}"
        return f"bench {self.name} {value} {self.unit}"


class FirstBatchTimer:
    """Wraps a consumer handler (plain or two-phase) and notes when the first batch came."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.first: float | None = None

    def prepare(self, records: Sequence[Any]) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
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
    timeout_s: float = 150,
) -> tuple[float, int]:
    """Runs a BatchConsumer with ``handler`` until ``total`` records are committed.

    Returns the seconds from the first batch to the last commit, and the batches used.
    """
    timed = FirstBatchTimer(handler)
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
    finally:
        await consumer.stop()
        await task
        await consumer.close()
    assert timed.first is not None
    return finished - timed.first, consumer.batches_done
