"""The FastAPI application every service starts from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Request

from shared.auth import Authenticator
from shared.db import create_pool
from shared.kafka import Producer, ensure_topics, kafka_reachable, make_producer
from shared.migrations import migrate
from shared.observability import get_logger, health_router, setup_logging
from shared.problems import BodySizeLimit, install_problem_handlers
from shared.security_headers import SecurityHeaders
from shared.settings import CommonSettings

log = get_logger(__name__)

if TYPE_CHECKING:
    Pool = asyncpg.Pool[Any]
else:  # asyncpg's classes are not generic at runtime
    Pool = asyncpg.Pool


def _pool(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


# The service's database pool, opened by its lifespan as ``app.state.pool``.
PoolDep = Annotated[Pool, Depends(_pool)]

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def build_app(
    *,
    title: str,
    settings: CommonSettings,
    lifespan: Lifespan,
    routers: Sequence[APIRouter],
) -> FastAPI:
    app = FastAPI(
        title=title,
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.auth = Authenticator.from_settings(settings)
    app.state.readiness = {}
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(SecurityHeaders)
    app.include_router(health_router())
    for router in routers:
        app.include_router(router)
    return app


class Worker(Protocol):
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class Resources:
    """What a service's lifespan opens: its pool, its producer, its background workers."""

    dsn: str
    pool: Pool
    producer: Producer
    workers: Workers


@asynccontextmanager
async def service_resources(
    app: FastAPI,
    settings: CommonSettings,
    *,
    database: str,
    migrations: Path,
    topics: Sequence[str],
) -> AsyncIterator[Resources]:
    """Logging, migrations, the pool (``app.state.pool``), the topics, a started producer
    and the readiness checks; on exit the workers stop (and close) before the producer
    and the pool, in that order."""
    setup_logging(settings.log_level, settings.log_json)
    dsn = settings.dsn(database)
    await migrate(dsn, migrations)
    pool = await create_pool(dsn, min_size=settings.pg_pool_min, max_size=settings.pg_pool_max)
    producer = make_producer(settings.kafka_bootstrap)
    workers = Workers()
    try:
        await ensure_topics(settings.kafka_bootstrap, topics, settings.topic_partitions)
        await producer.start()

        async def postgres_ready() -> None:
            await pool.fetchval("SELECT 1")

        async def kafka_ready() -> None:
            await kafka_reachable(producer)

        app.state.pool = pool
        app.state.readiness = {"postgres": postgres_ready, "kafka": kafka_ready}
        yield Resources(dsn, pool, producer, workers)
    finally:
        await workers.stop()
        await producer.stop()
        await pool.close()


class Workers:
    """A service's background loops (outbox relay, consumers): started and stopped with it."""

    def __init__(self) -> None:
        self._running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(self, name: str, worker: Worker) -> None:
        task = asyncio.create_task(worker.run(), name=name)
        task.add_done_callback(_report_crash)
        self._running.append((worker, task))

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Asks every worker to stop, waits, then closes those that have ``close()``."""
        for worker, _ in self._running:
            await worker.stop()
        tasks = [task for _, task in self._running]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for worker, _ in self._running:
            close = getattr(worker, "close", None)
            if close is not None:
                await close()
        self._running.clear()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background worker crashed", worker=task.get_name(), error=repr(task.exception()))
