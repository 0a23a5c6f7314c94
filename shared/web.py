"""The FastAPI application every service starts from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from shared.auth import Authenticator
from shared.db import Pool, create_pool
from shared.kafka import KafkaAccess, Producer, ensure_topics, kafka_reachable, make_producer
from shared.migrations import migrate
from shared.observability import get_logger, health_router, setup_logging
from shared.problems import (
    BodySizeLimit,
    CrashBarrier,
    InvalidRequestObserver,
    install_problem_handlers,
)
from shared.security_headers import SecurityHeaders
from shared.settings import CommonSettings
from shared.tracing import TracingMiddleware, tracing

log = get_logger(__name__)


async def app_service(request: Request) -> Any:
    """The service layer object the lifespan stored as ``app.state.service``; each
    service's endpoints type it: ``ServiceDep = Annotated[XService, Depends(app_service)]``.
    (async: FastAPI would run a plain ``def`` dependency in a worker thread.)"""
    return request.app.state.service


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, or ``*``)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def conditional_response(
    body: bytes, etag: str, if_none_match: str | None, *, cache_control: str
) -> Response:
    """A JSON read with a strong ETag: 304 without a body when the client has it already."""
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def build_app(
    *,
    title: str,
    settings: CommonSettings,
    lifespan: Lifespan,
    routers: Sequence[APIRouter],
    on_invalid_request: InvalidRequestObserver | None = None,
) -> FastAPI:
    app = FastAPI(
        title=title,
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.auth = Authenticator.from_settings(settings)
    app.state.readiness = {}
    install_problem_handlers(app, on_invalid_request=on_invalid_request)
    # Outermost last: security headers on every answer, the body limit around the app,
    # and the crash barrier innermost, so even a 500 passes through the other two.
    app.add_middleware(CrashBarrier)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(TracingMiddleware)  # outermost: the span covers the whole answer
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
    service: str,
    database: str,
    migrations: Path,
    topics: Sequence[str],
) -> AsyncIterator[Resources]:
    """Logging, tracing, migrations, the pool, the topics, a started producer and the
    readiness checks; on exit the workers stop (and close) before the producer and the
    pool, in that order, and the spans still queued are exported last. The lifespan
    builds the service layer from these as ``app.state.service``."""
    setup_logging(settings.log_level, settings.log_json)
    with tracing(service, settings.traces_dir):
        async with _resources(
            app, settings, database=database, migrations=migrations, topics=topics
        ) as res:
            yield res


@asynccontextmanager
async def _resources(
    app: FastAPI,
    settings: CommonSettings,
    *,
    database: str,
    migrations: Path,
    topics: Sequence[str],
) -> AsyncIterator[Resources]:
    dsn = settings.dsn(database)
    await migrate(dsn, migrations)
    pool = await create_pool(dsn, min_size=settings.pg_pool_min, max_size=settings.pg_pool_max)
    kafka = KafkaAccess.from_settings(settings)
    producer = make_producer(kafka)
    workers = Workers()
    try:
        await ensure_topics(
            kafka,
            topics,
            settings.topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            min_insync=settings.kafka_min_insync,
        )
        await producer.start()

        async def postgres_ready() -> None:
            await pool.fetchval("SELECT 1")

        async def kafka_ready() -> None:
            await kafka_reachable(producer)

        app.state.pool = pool  # for tests and tools; requests go through app.state.service
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
