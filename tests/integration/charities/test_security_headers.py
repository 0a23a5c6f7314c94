"""Security headers on the charities service's responses: API, page, problems, docs."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from services.charities.app import create_app
from services.charities.config import Settings
from shared.security_headers import API_CSP, DOCS_CSP, PAGE_CSP

COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def assert_secured(response: httpx.Response, csp: str) -> None:
    for name, value in COMMON.items():
        assert response.headers.get_list(name) == [value], (name, response.headers)
    assert response.headers.get_list("content-security-policy") == [csp]


@pytest.mark.parametrize(
    ("path", "status", "content_type", "csp"),
    [
        ("/v1/totals", 200, "application/json", API_CSP),
        ("/v1/charities?limit=0", 422, "application/problem+json", API_CSP),
        ("/v1/nowhere", 404, "application/problem+json", API_CSP),
        ("/healthz", 200, "application/json", API_CSP),
        ("/", 200, "text/html", PAGE_CSP),
        ("/static/dashboard.js", 200, "text/javascript", API_CSP),
        ("/docs", 200, "text/html", DOCS_CSP),
        ("/redoc", 200, "text/html", DOCS_CSP),
    ],
)
async def test_headers(
    client: httpx.AsyncClient, path: str, status: int, content_type: str, csp: str
) -> None:
    response = await client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(content_type)
    assert_secured(response, csp)


async def test_problem_from_a_write(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post("/v1/charities", json={}, headers=admin)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert_secured(response, API_CSP)


async def test_not_modified(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/totals")
    again = await client.get("/v1/totals", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert_secured(again, API_CSP)


async def test_totals_fast_path() -> None:
    """With a fresh cache entry ``GET /v1/totals`` is answered before routing: the headers
    must be there too."""
    app: FastAPI = create_app(Settings(totals_cache_seconds=60.0), consume=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://charities") as client:
            first = await client.get("/v1/totals")  # fills the cache through the router
            cached = await client.get("/v1/totals")
            revalidated = await client.get(
                "/v1/totals", headers={"If-None-Match": first.headers["ETag"]}
            )
    assert (first.status_code, cached.status_code, revalidated.status_code) == (200, 200, 304)
    for response in (first, cached, revalidated):
        assert_secured(response, API_CSP)
