"""The orders service: ``uvicorn services.orders.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
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
from shared.events import TOPIC_ORDERS
from shared.observability import get_logger
from shared.outbox import OutboxRelay
from shared.problems import (
    Problem,
    conflict,
    not_found,
    problem_response,
    validation_problem,
)
from shared.web import build_app, service_resources

MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topic = settings.topic(TOPIC_ORDERS)
        async with service_resources(
            app, settings, database=settings.orders_db, migrations=MIGRATIONS, topics=[topic]
        ) as res:
            relay = OutboxRelay(
                service="orders",
                dsn=res.dsn,
                pool=res.pool,
                producer=res.producer,
                batch_size=settings.relay_batch_size,
            )
            if settings.relay_enabled:
                res.workers.start("orders-outbox-relay", relay)
            app.state.relay = relay
            app.state.orders = OrderService(
                res.pool, topic=topic, clock_skew=timedelta(seconds=settings.clock_skew_seconds)
            )
            log.info("orders service started", database=settings.orders_db, topic=topic)
            yield

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
