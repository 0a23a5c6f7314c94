"""The donations service: ``uvicorn services.donations.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from services.donations.charities import CharitiesClient
from services.donations.config import Settings
from services.donations.consumer import build_consumer
from services.donations.endpoints import FAST_PATHS, router
from services.donations.log import LEAF_SOURCES
from services.donations.posting import PostingJob
from services.donations.service import DonationService
from shared.events import TOPIC_LEDGER, TOPIC_ORDERS, TOPICS
from shared.fastpath import install_fast_paths
from shared.observability import get_logger
from shared.outbox import OutboxRelay
from shared.tlog.api import LogReader, log_router
from shared.tlog.sequencer import Sequencer
from shared.tlog.signing import load_or_create_signer
from shared.web import build_app, service_resources

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    key = settings.donations_log_key
    signer = load_or_create_signer(
        settings.donations_log_origin,
        key.get_secret_value() if key is not None else None,
        settings.donations_log_key_file,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topics = [settings.topic(name) for name in TOPICS]
        async with service_resources(
            app,
            settings,
            service="donations",
            database=settings.donations_db,
            migrations=MIGRATIONS,
            topics=topics,
        ) as res:
            charities = CharitiesClient(
                settings.charities_url,
                timeout_s=settings.charities_timeout_s,
                cache_ttl_s=settings.charities_cache_ttl_s,
            )
            try:
                relay = OutboxRelay(
                    service="donations", dsn=res.dsn, pool=res.pool, producer=res.producer
                )
                consumer = build_consumer(settings, res.pool, res.producer)
                await consumer.start()
                app.state.log = LogReader(res.pool, signer.verifier().key)
                sequencer = Sequencer(
                    origin=settings.donations_log_origin,
                    dsn=res.dsn,
                    signer=signer,
                    sources=LEAF_SOURCES,
                    batch_size=settings.donations_log_batch,
                    on_checkpoint=app.state.log.publish,
                )
                app.state.service = DonationService(res.pool, charities, app.state.log)
                res.workers.start("donations-outbox-relay", relay)
                res.workers.start("donations-consumer", consumer)
                res.workers.start("donations-log-sequencer", sequencer)
                if settings.posting_enabled:
                    posting = PostingJob(
                        pool=res.pool,
                        bootstrap=settings.kafka_bootstrap,
                        orders_topic=settings.topic(TOPIC_ORDERS),
                        ledger_topic=settings.topic(TOPIC_LEDGER),
                        grace=timedelta(seconds=settings.posting_grace_s),
                        interval_s=settings.posting_interval_s,
                        batch_size=settings.posting_batch_size,
                    )
                    res.workers.start("donations-posting", posting)
                log.info("donations service started")
                yield
            finally:
                await charities.aclose()
        log.info("donations service stopped")

    app = build_app(
        title="Goods for Good — donations",
        settings=settings,
        lifespan=lifespan,
        routers=[router, log_router()],
    )
    install_fast_paths(app, *FAST_PATHS)
    return app
