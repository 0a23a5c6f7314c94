"""One charities app per test session (migrations, pool, consumer), reached over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from services.charities.app import create_app
from services.charities.config import Settings
from shared.events import TOPIC_LEDGER
from shared.kafka import Producer, make_producer
from tests.conftest import bearer


@pytest.fixture(scope="package")
def charities_settings() -> Settings:
    # No response cache in tests: each read sees the latest committed totals.
    return Settings(totals_cache_seconds=0.0)


@pytest.fixture(scope="package")
async def charities_app(charities_settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(charities_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(charities_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=charities_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://charities") as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    return bearer("admin")


@pytest.fixture(scope="package")
async def ledger_producer(
    charities_settings: Settings, charities_app: FastAPI
) -> AsyncIterator[Producer]:
    """Produces onto the test ledger topic (created by the app's start)."""
    producer = make_producer(charities_settings.kafka_bootstrap)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@pytest.fixture
def ledger_topic(charities_settings: Settings) -> str:
    return charities_settings.topic(TOPIC_LEDGER)
