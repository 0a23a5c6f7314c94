"""The donations service: ``uvicorn services.donations.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.donations.charities import CharitiesClient
from services.donations.config import Settings
from services.donations.consumer import build_consumer
from services.donations.endpoints import router
from shared.db import create_pool
from shared.events import TOPICS
from shared.kafka import ensure_topics, kafka_reachable, make_producer
from shared.migrations import migrate
from shared.observability import get_logger, setup_logging
from shared.outbox import OutboxRelay
from shared.web import Workers, build_app

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(settings.log_level, settings.log_json)
        dsn = settings.dsn(settings.donations_db)
        await migrate(dsn, MIGRATIONS)
        pool = await create_pool(dsn, min_size=settings.pg_pool_min, max_size=settings.pg_pool_max)
        charities = CharitiesClient(
            settings.charities_url,
            timeout_s=settings.charities_timeout_s,
            cache_ttl_s=settings.charities_cache_ttl_s,
        )
        producer = make_producer(settings.kafka_bootstrap)
        workers = Workers()
        consumer = None
        try:
            await ensure_topics(
                settings.kafka_bootstrap,
                [settings.topic(name) for name in TOPICS],
                settings.topic_partitions,
            )
            await producer.start()
            relay = OutboxRelay(service="donations", dsn=dsn, pool=pool, producer=producer)
            consumer = build_consumer(settings, pool, producer)
            await consumer.start()

            async def postgres_ready() -> None:
                await pool.fetchval("SELECT 1")

            async def kafka_ready() -> None:
                await kafka_reachable(producer)

            app.state.pool = pool
            app.state.charities = charities
            app.state.relay = relay
            app.state.consumer = consumer
            app.state.readiness = {"postgres": postgres_ready, "kafka": kafka_ready}
            workers.start("donations-outbox-relay", relay)
            workers.start("donations-consumer", consumer)
            log.info("donations service started")
            yield
        finally:
            await workers.stop()
            if consumer is not None:
                await consumer.close()
            await producer.stop()
            await charities.aclose()
            await pool.close()
            log.info("donations service stopped")

    return build_app(
        title="Goods for Good — donations",
        settings=settings,
        lifespan=lifespan,
        routers=[router],
    )
