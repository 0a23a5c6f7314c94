"""The FastAPI application every service starts from."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Request

from shared.auth import Authenticator
from shared.observability import get_logger, health_router
from shared.problems import BodySizeLimit, install_problem_handlers
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
    app.state.auth = Authenticator(settings.jwt_secret.get_secret_value(), settings.jwt_algorithm)
    app.state.readiness = {}
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit)
    app.include_router(health_router())
    for router in routers:
        app.include_router(router)
    return app


class Worker(Protocol):
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


class Workers:
    """A service's background loops (outbox relay, consumers): started and stopped with it."""

    def __init__(self) -> None:
        self._running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(self, name: str, worker: Worker) -> None:
        task = asyncio.create_task(worker.run(), name=name)
        task.add_done_callback(_report_crash)
        self._running.append((worker, task))

    async def stop(self, grace_seconds: float = 10.0) -> None:
        for worker, _ in self._running:
            await worker.stop()
        tasks = [task for _, task in self._running]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background worker crashed", worker=task.get_name(), error=repr(task.exception()))
