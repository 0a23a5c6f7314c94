"""The FastAPI application every service starts from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import Authenticator
from shared.db import Pool, create_pool
from shared.kafka import KafkaAccess, Producer, ensure_topics, kafka_reachable, make_producer
from shared.migrations import migrate
from shared.observability import get_logger, health_router, setup_logging
from shared.problems import (
    MAX_BODY_BYTES,
    InternalError,
    InvalidRequestObserver,
    PayloadTooLarge,
    install_problem_handlers,
    problem_response,
)
from shared.security_headers import DOCS_PATHS, Headers, extra_headers
from shared.settings import CommonSettings
from shared.tracing import UNTRACED_PATHS, request_parent, tracer, tracing

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
        # RequestLayer does the tracing; FastAPI's own telemetry (off while no global
        # provider is set) would otherwise still look the providers up on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.auth = Authenticator.from_settings(settings)
    app.state.readiness = {}
    install_problem_handlers(app, on_invalid_request=on_invalid_request)
    app.add_middleware(RequestLayer)
    app.include_router(health_router())
    for router in routers:
        app.include_router(router)
    return app


_DISCONNECT: Message = {"type": "http.disconnect"}


class RequestLayer:
    """Everything a service does around each HTTP request, as one pure ASGI layer (one
    wrapped ``send`` instead of one per concern), from the outside in:

    - tracing: a server span per request (probes and metrics excepted), continuing the
      caller's ``traceparent``, named by the matched route's template. An unsampled span
      (the sampler's decision, 99 % by default) is only made current: no status, no route;
    - security headers (``shared.security_headers``) on every answer, a 413 or 500 too;
    - the body limit: a declared ``Content-Length`` over ``limit`` is answered 413 before
      the app runs; a body without one (chunked) is counted as the app reads it, and at the
      first byte over this layer answers 413 itself, tells the app the client went away and
      drops whatever the app then sends (FastAPI turns a failed body read into a 400). A
      declared length is the most the server passes on, so such a body is not counted;
    - the crash barrier: an unhandled exception is logged and answered as a well-formed
      500 problem (Starlette's own last resort re-raises after answering, and the server
      then closes the connection; here keep-alive clients keep theirs). If the response
      had already started, there is nothing well-formed left to send, and the exception
      goes on to the server.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in UNTRACED_PATHS:
            await self._answer(scope, receive, send, None)
            return
        method = scope["method"]
        span = tracer().start_span(
            f"{method} {path}",
            context=request_parent(scope["headers"]),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        if not span.is_recording():
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                await self._answer(scope, receive, send, None)
            finally:
                otel_context.detach(token)
            return
        status: list[int] = []
        with trace.use_span(span, end_on_exit=True):
            await self._answer(scope, receive, send, status)
            route = getattr(scope.get("route"), "path", None)
            if route is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            if status:
                span.set_attribute("http.response.status_code", status[0])
                if status[0] >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, status: list[int] | None
    ) -> None:
        path: str = scope["path"]
        docs = path in DOCS_PATHS
        limit = self.limit
        declared = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    too_large = PayloadTooLarge(f"request bodies are limited to {limit} bytes")
                    await problem_response(too_large, path)(
                        scope, receive, _secured(send, docs, status)
                    )
                    return
                declared = True
        started = False  # the app's answer has begun
        answered = False  # this layer answered 413 in the app's place

        async def app_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if answered:
                    return
                headers: Headers = message.get("headers", [])
                message = {**message, "headers": [*headers, *extra_headers(headers, docs)]}
                if status is not None:
                    status.append(message["status"])
            elif answered:
                return
            await send(message)

        app_receive = receive
        if not declared:
            received = 0
            refused = False  # the body went over the limit: the app reads no more of it

            async def limited_receive() -> Message:
                nonlocal received, refused, answered
                if refused:
                    return _DISCONNECT
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        refused = True
                        if not started:
                            answered = True
                            too_large = PayloadTooLarge(
                                f"request bodies are limited to {limit} bytes"
                            )
                            secured = _secured(send, docs, status)
                            await problem_response(too_large, path)(scope, receive, secured)
                        return _DISCONNECT
                return message

            app_receive = limited_receive
        try:
            await self.app(scope, app_receive, app_send)
        except Exception as exc:
            log.error(
                "unhandled exception in request",
                method=scope.get("method"),
                path=path,
                exc_info=exc,
            )
            if started:
                raise
            await problem_response(InternalError(), path)(scope, app_receive, app_send)


def _secured(send: Send, docs: bool, status: list[int] | None) -> Send:
    """``send`` with the security headers (and the status noted for the span): this
    layer's own 413 answers."""

    async def secured_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: Headers = message.get("headers", [])
            message = {**message, "headers": [*headers, *extra_headers(headers, docs)]}
            if status is not None:
                status.append(message["status"])
        await send(message)

    return secured_send


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
