"""The charities service: ``uvicorn services.charities.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware import Middleware

from services.charities.campaigns import DonationsClient
from services.charities.config import Settings
from services.charities.consumer import LedgerFolder
from services.charities.endpoints import TotalsFastPath, pages, router, static_files
from services.charities.log import LEAF_SOURCES
from services.charities.service import CharityService
from shared import db
from shared.events import TOPIC_LEDGER
from shared.kafka import BatchConsumer, KafkaAccess
from shared.observability import get_logger
from shared.tlog.api import LogReader, log_router
from shared.tlog.sequencer import Sequencer
from shared.tlog.signing import load_or_create_signer
from shared.web import build_app, service_resources

MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)


def create_app(settings: Settings | None = None, *, consume: bool | None = None) -> FastAPI:
    """``consume=False`` serves the API without folding the ledger (benchmarks, tools)."""
    settings = settings or Settings()
    if consume is None:
        consume = settings.charities_consume_ledger
    key = settings.charities_log_key
    signer = load_or_create_signer(
        settings.charities_log_origin,
        key.get_secret_value() if key is not None else None,
        settings.charities_log_key_file,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topic = settings.topic(TOPIC_LEDGER)
        async with service_resources(
            app,
            settings,
            service="charities",
            database=settings.charities_db,
            migrations=MIGRATIONS,
            topics=[topic],
        ) as res:
            donations = DonationsClient(
                settings.donations_url,
                timeout_s=settings.campaigns_timeout_s,
                stale_s=settings.campaigns_stale_s,
            )
            read_pool = None
            try:
                if settings.charities_read_dsn is not None:
                    read_pool = await db.create_pool(
                        settings.charities_read_dsn.get_secret_value(),
                        min_size=1,
                        max_size=settings.charities_read_pool_max,
                    )
                app.state.log = LogReader(res.pool, signer.verifier().key)
                app.state.service = service = CharityService(
                    res.pool,
                    totals_cache_seconds=settings.totals_cache_seconds,
                    donations=donations,
                    campaigns_cache_seconds=settings.campaigns_cache_seconds,
                    read_pool=read_pool,
                    donations_verifier_key=settings.donations_verifier_key,
                    log=app.state.log,
                )
                if read_pool is not None:
                    app.state.readiness["postgres_replica"] = service.reads.readiness(
                        settings.charities_read_max_lag_s
                    )
                if settings.charities_log_sequence:
                    sequencer = Sequencer(
                        origin=settings.charities_log_origin,
                        dsn=res.dsn,
                        signer=signer,
                        sources=LEAF_SOURCES,
                        batch_size=settings.charities_log_batch,
                        on_checkpoint=app.state.log.publish,
                    )
                    res.workers.start("charities-log-sequencer", sequencer)
                if consume:
                    consumer = BatchConsumer(
                        bootstrap=KafkaAccess.from_settings(settings),
                        topic=topic,
                        group_id=settings.topic_prefix + "charities",
                        # On the primary the fold's commit is visible at once: expire the
                        # cached totals then. A replica may not have replayed it yet, and an
                        # early reload would cache the old totals anew, so there the TTL rules.
                        handler=LedgerFolder(
                            res.pool, service.cache.expire if read_pool is None else None
                        ),
                        producer=res.producer,
                        max_records=settings.ledger_batch_max,
                        replication_factor=settings.kafka_replication_factor,
                        min_insync=settings.kafka_min_insync,
                        handler_is_transient=db.is_transient,
                    )
                    await consumer.start()
                    res.workers.start("ledger-consumer", consumer)
                log.info(
                    "charities service started",
                    topic=topic,
                    consume=consume,
                    read_replica=read_pool is not None,
                )
                yield
            finally:
                await donations.aclose()
                if read_pool is not None:
                    await read_pool.close()

    app = build_app(
        title="Goods for Good: charities",
        settings=settings,
        lifespan=lifespan,
        routers=[router, log_router(), pages],
    )
    app.mount("/static", static_files(), name="static")
    # Innermost (just before routing) rather than outermost: its cached answers still pass
    # through build_app's middleware (security headers, body limit).
    app.user_middleware.append(Middleware(TotalsFastPath))
    return app
