"""The orders service: ``uvicorn services.orders.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from services.orders import domain
from services.orders.config import Settings
from services.orders.endpoints import router
from services.orders.service import (
    OUTCOMES,
    IdempotencyConflict,
    InvalidOrder,
    OrderNotFound,
    OrderService,
)
from shared.db import create_pool
from shared.events import TOPIC_ORDERS
from shared.kafka import ensure_topics, kafka_reachable, make_producer
from shared.migrations import migrate
from shared.observability import get_logger, setup_logging
from shared.outbox import OutboxRelay
from shared.problems import (
    Problem,
    conflict,
    not_found,
    problem_response,
    validation_problem,
)
from shared.web import Workers, build_app

MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(settings.log_level, settings.log_json)
        dsn = settings.dsn(settings.orders_db)
        await migrate(dsn, MIGRATIONS)
        pool = await create_pool(dsn, min_size=settings.pg_pool_min, max_size=settings.pg_pool_max)
        workers = Workers()
        producer = make_producer(settings.kafka_bootstrap)
        try:
            topic = settings.topic(TOPIC_ORDERS)
            await ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions)
            await producer.start()
            relay = OutboxRelay(
                service="orders",
                dsn=dsn,
                pool=pool,
                producer=producer,
                batch_size=settings.relay_batch_size,
            )
            if settings.relay_enabled:
                workers.start("orders-outbox-relay", relay)
            app.state.pool = pool
            app.state.relay = relay
            app.state.orders = OrderService(
                pool, topic=topic, clock_skew=timedelta(seconds=settings.clock_skew_seconds)
            )

            async def postgres() -> None:
                await pool.fetchval("SELECT 1")

            app.state.readiness = {
                "postgres": postgres,
                "kafka": partial(kafka_reachable, producer),
            }
            log.info("orders service started", database=settings.orders_db, topic=topic)
            yield
        finally:
            await workers.stop()
            await producer.stop()
            await pool.close()

    app = build_app(
        title="Goods for Good: orders", settings=settings, lifespan=lifespan, routers=[router]
    )
    _install_error_mapping(app)
    return app


def _install_error_mapping(app: FastAPI) -> None:
    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        route = request.scope.get("route")
        OUTCOMES.labels(getattr(route, "name", "unknown"), "invalid").inc()
        return problem_response(validation_problem(exc.errors()), request.url.path)

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidOrder)
        problem = validation_problem([{"loc": (e.field,), "msg": e.message} for e in exc.errors])
        return problem_response(problem, request.url.path)

    async def on_not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OrderNotFound)
        return problem_response(not_found("order", exc.order_id), request.url.path)

    async def on_conflict(request: Request, exc: Exception) -> Response:
        return problem_response(conflict(str(exc)), request.url.path)

    async def on_illegal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, domain.IllegalTransition)
        problem: Problem = conflict(str(exc), current_status=exc.current.value)
        return problem_response(problem, request.url.path)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidOrder, on_invalid)
    app.add_exception_handler(OrderNotFound, on_not_found)
    app.add_exception_handler(IdempotencyConflict, on_conflict)
    app.add_exception_handler(domain.IllegalTransition, on_illegal)
