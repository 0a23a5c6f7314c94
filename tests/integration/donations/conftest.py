"""A real charities app and a real donations app (consumer and relay running) per session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from services.charities.app import create_app as create_charities_app
from services.donations.app import create_app as create_donations_app
from services.donations.config import Settings
from shared.auth import Role
from shared.db import connect
from shared.events import TOPIC_ORDERS, encode
from shared.kafka import Producer, make_producer
from tests.conftest import bearer, unique
from tests.support import serve


@dataclass(frozen=True)
class Donations:
    url: str
    charities_url: str
    settings: Settings


@pytest.fixture(scope="package")
async def charities_url() -> AsyncIterator[str]:
    async with serve(create_charities_app(consume=False)) as url:
        yield url


@pytest.fixture(scope="package")
async def donations(charities_url: str) -> AsyncIterator[Donations]:
    settings = Settings(charities_url=charities_url)
    async with serve(create_donations_app(settings)) as url:
        yield Donations(url, charities_url, settings)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


@pytest.fixture(scope="package")
async def order_producer(donations: Donations) -> AsyncIterator[Producer]:
    producer = make_producer(donations.settings.kafka_bootstrap)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@pytest.fixture
async def db(donations: Donations) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await connect(donations.settings.dsn(donations.settings.donations_db))
    try:
        yield conn
    finally:
        await conn.close()


async def create_project(
    http: httpx.AsyncClient, charities_url: str, currency: str = "CNY", *, closed: bool = False
) -> str:
    admin = bearer(Role.ADMIN)
    charity = await http.post(
        f"{charities_url}/v1/charities", json={"name": unique("Charity")}, headers=admin
    )
    assert charity.status_code == 201, charity.text
    project = await http.post(
        f"{charities_url}/v1/charities/{charity.json()['charity_id']}/projects",
        json={"name": unique("Project"), "currency": currency},
        headers=admin,
    )
    assert project.status_code == 201, project.text
    project_id: str = project.json()["project_id"]
    if closed:
        done = await http.post(f"{charities_url}/v1/projects/{project_id}/close", headers=admin)
        assert done.status_code == 200, done.text
    return project_id


async def put_rule(
    http: httpx.AsyncClient, donations: Donations, seller_id: str, **body: Any
) -> dict[str, Any]:
    body.setdefault("active", True)
    response = await http.put(
        f"{donations.url}/v1/sellers/{seller_id}/donation-rule",
        json=body,
        headers=bearer(Role.SELLER, seller_id),
    )
    assert response.status_code == 200, response.text
    rule: dict[str, Any] = response.json()
    return rule


async def publish(producer: Producer, topic: str, *events: msgspec.Struct) -> None:
    for event in events:
        order_id = getattr(event, "order_id", None) or event.order.order_id  # type: ignore[attr-defined]
        await producer.send_and_wait(topic, encode(event), key=order_id.encode())


def orders_topic(donations: Donations) -> str:
    return donations.settings.topic(TOPIC_ORDERS)
