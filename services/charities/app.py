"""The charities service: ``uvicorn services.charities.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.charities.config import Settings
from services.charities.consumer import LedgerFolder
from services.charities.endpoints import TotalsFastPath, pages, router, static_files
from services.charities.service import ResponseCache
from shared.db import create_pool
from shared.events import TOPIC_LEDGER
from shared.kafka import BatchConsumer, ensure_topics, kafka_reachable, make_producer
from shared.migrations import migrate
from shared.observability import get_logger, setup_logging
from shared.web import Workers, build_app

MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)


def create_app(settings: Settings | None = None, *, consume: bool | None = None) -> FastAPI:
    """``consume=False`` serves the API without folding the ledger (benchmarks, tools)."""
    settings = settings or Settings()
    if consume is None:
        consume = settings.charities_consume_ledger

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(settings.log_level, settings.log_json)
        dsn = settings.dsn(settings.charities_db)
        await migrate(dsn, MIGRATIONS)
        pool = await create_pool(dsn, min_size=settings.pg_pool_min, max_size=settings.pg_pool_max)
        app.state.pool = pool
        app.state.totals_cache = ResponseCache(settings.totals_cache_seconds)
        topic = settings.topic(TOPIC_LEDGER)
        producer = make_producer(settings.kafka_bootstrap)
        workers = Workers()
        consumer: BatchConsumer | None = None
        try:
            await ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions)
            await producer.start()

            async def postgres_ready() -> None:
                await pool.fetchval("SELECT 1")

            async def kafka_ready() -> None:
                await kafka_reachable(producer)

            app.state.readiness = {"postgres": postgres_ready, "kafka": kafka_ready}
            if consume:
                consumer = BatchConsumer(
                    bootstrap=settings.kafka_bootstrap,
                    topic=topic,
                    group_id=settings.topic_prefix + "charities",
                    handler=LedgerFolder(pool),
                    producer=producer,
                    max_records=settings.ledger_batch_max,
                )
                await consumer.start()
                workers.start("ledger-consumer", consumer)
            log.info("charities service started", topic=topic, consume=consume)
            yield
        finally:
            await workers.stop()
            if consumer is not None:
                await consumer.close()
            await producer.stop()
            await pool.close()

    app = build_app(
        title="Goods for Good: charities",
        settings=settings,
        lifespan=lifespan,
        routers=[router, pages],
    )
    app.mount("/static", static_files(), name="static")
    app.add_middleware(TotalsFastPath)
    return app
