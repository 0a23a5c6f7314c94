"""The orders service: ``uvicorn services.orders.app:create_app --factory``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from services.orders.config import Settings
from services.orders.endpoints import LEAN_ROUTES, router
from services.orders.service import OrderService, count_invalid_request
from shared.events import TOPIC_ORDERS
from shared.fastpath import install_fast_paths
from shared.observability import get_logger
from shared.outbox import OutboxRelay
from shared.web import build_app, service_resources

MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topic = settings.topic(TOPIC_ORDERS)
        async with service_resources(
            app,
            settings,
            service="orders",
            database=settings.orders_db,
            migrations=MIGRATIONS,
            topics=[topic],
        ) as res:
            if settings.relay_enabled:
                relay = OutboxRelay(
                    service="orders",
                    dsn=res.dsn,
                    pool=res.pool,
                    producer=res.producer,
                    batch_size=settings.relay_batch_size,
                )
                res.workers.start("orders-outbox-relay", relay)
            app.state.service = OrderService(
                res.pool, topic=topic, clock_skew=timedelta(seconds=settings.clock_skew_seconds)
            )
            # The objects of startup (modules, models, the app) are moved out of the
            # collector's reach, and it runs less often: a batch of 1,000 orders makes
            # about 8,000 collector-tracked objects, nearly none of them cyclic, and every
            # full collection walked the whole heap (BENCHMARKS.md, "Batch ingest, third
            # pass").
            gc.freeze()
            gc.set_threshold(10_000, 20, 20)
            log.info("orders service started", database=settings.orders_db, topic=topic)
            yield

    app = build_app(
        title="Goods for Good: orders",
        settings=settings,
        lifespan=lifespan,
        routers=[router],
        on_invalid_request=count_invalid_request,
    )
    install_fast_paths(app, *LEAN_ROUTES)
    return app
