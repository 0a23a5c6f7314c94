"""The security headers ``build_app`` puts on every service's responses (no servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import HTMLResponse

from shared.problems import MAX_BODY_BYTES, NotFound
from shared.security_headers import API_CSP, DOCS_CSP, PAGE_CSP
from shared.settings import CommonSettings
from shared.web import build_app

router = APIRouter()


@router.get("/thing")
async def thing() -> dict[str, int]:
    return {"amount_minor": 1}


@router.get("/page", response_class=HTMLResponse)
async def page() -> str:
    return "<!doctype html><title>page</title>"


@router.get("/missing")
async def missing() -> None:
    raise NotFound("thing", "x")


@router.get("/own-policy")
async def own_policy() -> Response:
    return Response("{}", media_type="application/json", headers={"Content-Security-Policy": "x"})


@router.post("/upload")
async def upload(body: dict[str, str]) -> dict[str, str]:
    return body


@asynccontextmanager
async def no_resources(app: FastAPI) -> AsyncIterator[None]:
    yield


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(
        title="headers", settings=CommonSettings(), lifespan=no_resources, routers=[router]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield client


def headers_of(response: httpx.Response) -> dict[str, list[str]]:
    names = (
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "content-security-policy",
    )
    return {name: response.headers.get_list(name) for name in names}


def expected(csp: str) -> dict[str, list[str]]:
    return {
        "x-content-type-options": ["nosniff"],
        "x-frame-options": ["DENY"],
        "referrer-policy": ["no-referrer"],
        "content-security-policy": [csp],
    }


@pytest.mark.parametrize(
    ("path", "status", "csp"),
    [
        ("/thing", 200, API_CSP),
        ("/page", 200, PAGE_CSP),
        ("/missing", 404, API_CSP),  # a domain problem
        ("/nowhere", 404, API_CSP),  # a routing problem
        ("/openapi.json", 200, API_CSP),
        ("/docs", 200, DOCS_CSP),  # Swagger UI: CDN assets and an inline script
        ("/docs/oauth2-redirect", 200, DOCS_CSP),
        ("/redoc", 200, DOCS_CSP),
        ("/own-policy", 200, "x"),  # an endpoint's own policy is kept, not doubled
    ],
)
async def test_every_response_is_secured(
    client: httpx.AsyncClient, path: str, status: int, csp: str
) -> None:
    response = await client.get(path)
    assert response.status_code == status
    assert headers_of(response) == expected(csp)


async def test_refused_before_routing(client: httpx.AsyncClient) -> None:
    too_large = await client.post("/upload", content=b"x" * (MAX_BODY_BYTES + 1))
    assert too_large.status_code == 413
    assert headers_of(too_large) == expected(API_CSP)
    invalid = await client.post("/upload", json={"a": 1})
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    assert headers_of(invalid) == expected(API_CSP)
