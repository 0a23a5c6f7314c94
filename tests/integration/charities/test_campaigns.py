"""``GET /v1/projects/{id}/campaigns``: the donations service's campaigns of a project,
relayed for the dashboard, and what it answers when donations is down.

The donations side here is a stand-in HTTP server that answers ``GET /v1/campaigns`` in
the contract's shape (pages, other projects' campaigns mixed in, so the relay's own
filtering and paging are exercised), run on a real socket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx

from services.charities.app import create_app
from services.charities.config import Settings
from tests.integration.charities.helpers import START, campaign, donations_stand_in, new_project
from tests.support import free_port, serve


@asynccontextmanager
async def charities_asking(donations_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        donations_url=donations_url,
        totals_cache_seconds=0.0,
        campaigns_cache_seconds=0.0,
        campaigns_timeout_s=2.0,
    )
    app = create_app(settings, consume=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://charities") as client:
            yield client


async def test_relays_the_projects_campaigns_in_matching_order_and_degrades(
    client: httpx.AsyncClient,
) -> None:
    _, project_id = await new_project(client)
    other = str(uuid.uuid4())
    later = (START + timedelta(days=1)).isoformat()
    campaigns = [
        campaign(project_id, "b-ratio", starts_at=later),
        campaign(other, "not-mine"),
        campaign(
            project_id,
            "z-items",
            ratio_bp=0,
            per_item_minor=100,
            status="exhausted",
            matched_minor=10_000,
            remaining_minor=0,
        ),  # fmt: skip
        campaign(project_id, "a-first", starts_at=later),
    ]
    answer = {"status": 200}
    async with serve(donations_stand_in(campaigns, answer)) as donations_url:
        async with charities_asking(donations_url) as charities:
            live = await charities.get(f"/v1/projects/{project_id}/campaigns")
            assert live.status_code == 200, live.text
            body = live.json()
            assert body["source"] == "live"
            assert body["fetched_at"] is not None
            # (starts_at, campaign_id): the order in which campaigns match
            assert [c["campaign_id"] for c in body["items"]] == ["z-items", "a-first", "b-ratio"]
            exhausted = body["items"][0]
            assert (exhausted["remaining_minor"], exhausted["status"]) == (0, "exhausted")
            assert exhausted["per_item_minor"] == 100
            assert "sellers" not in exhausted
            latest = (await charities.get(f"/v1/projects/{project_id}/campaigns")).json()

            # donations failing: the last good answer, marked stale
            answer["status"] = 503
            stale = (await charities.get(f"/v1/projects/{project_id}/campaigns")).json()
            assert stale["source"] == "stale"
            assert stale["items"] == body["items"]
            assert stale["fetched_at"] == latest["fetched_at"]
            # a project never answered for has nothing to fall back on
            _, fresh_project = await new_project(client)
            none = (await charities.get(f"/v1/projects/{fresh_project}/campaigns")).json()
            assert (none["source"], none["items"]) == ("unavailable", [])

            assert (
                await charities.get(f"/v1/projects/{uuid.uuid4()}/campaigns")
            ).status_code == 404
            assert (await charities.get("/v1/projects/nope/campaigns")).status_code == 404


async def test_donations_down_leaves_the_totals_and_page_working(
    client: httpx.AsyncClient,
) -> None:
    _, project_id = await new_project(client)
    async with charities_asking(f"http://127.0.0.1:{free_port()}") as charities:
        response = await charities.get(f"/v1/projects/{project_id}/campaigns")
        assert response.status_code == 200
        assert response.json() == {
            "project_id": project_id,
            "source": "unavailable",
            "fetched_at": None,
            "items": [],
        }
        assert (await charities.get(f"/v1/projects/{project_id}/totals")).status_code == 200
        assert (await charities.get("/")).status_code == 200
