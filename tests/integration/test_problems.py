"""The last resorts of the problem handlers, on a real socket and a real PostgreSQL: an
unhandled exception is a well-formed 500, a value the database refuses is a 422."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from shared.db import connect
from shared.observability import setup_logging
from shared.settings import CommonSettings
from shared.web import build_app
from tests.support import assert_problem, serve

SECRET = "internal-detail-7f3a"


def _app(settings: CommonSettings) -> FastAPI:
    router = APIRouter()
    dsn = settings.dsn("postgres")

    @router.get("/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError(SECRET)

    @router.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    @router.get("/refused/{case}")
    async def refused(case: str) -> dict[str, str]:
        """Each case is a value PostgreSQL or asyncpg refuses (validation would have)."""
        statements = {
            "numeric": ("SELECT $1::text::int4", "99999999999"),
            "nul": ("SELECT $1::text", "a\x00b"),
            "date": ("SELECT $1::text::date::text", "2025-13-45"),
            "text": ("SELECT $1::text::uuid", "not-a-uuid"),
            "argument": ("SELECT $1::int4", 2**40),
        }
        sql, value = statements[case]
        conn = await connect(dsn)
        try:
            await conn.fetchval(sql, value)
        finally:
            await conn.close()
        return {"stored": "yes"}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(settings.log_level, json=True)
        yield

    return build_app(title="problems", settings=settings, lifespan=lifespan, routers=[router])


@pytest.fixture(scope="module")
async def url(common_settings: CommonSettings) -> AsyncIterator[str]:
    async with serve(_app(common_settings)) as base:
        yield base


async def test_an_unhandled_exception_is_a_logged_problem_500(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        with caplog.at_level(logging.ERROR):
            crashed = await http.get("/boom")
        body = assert_problem(crashed, 500)
        assert SECRET not in crashed.text
        assert body["instance"] == "/boom"
        assert crashed.headers.get("connection") != "close"
        assert crashed.headers["x-content-type-options"] == "nosniff"
        # The same keep-alive connection answers the next request.
        assert (await http.get("/fine")).json() == {"ok": "yes"}
    logged = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "unhandled exception in request"
    ]
    assert len(logged) == 1, caplog.records
    assert logged[0]["path"] == "/boom"
    assert isinstance(logged[0]["exc_info"], RuntimeError)
    assert logged[0]["exc_info"].__traceback__ is not None


@pytest.mark.parametrize("case", ["numeric", "nul", "date", "text", "argument"])
async def test_values_the_database_refuses_are_422(url: str, case: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        refused = await http.get(f"/refused/{case}")
    body = assert_problem(refused, 422, "body")
    assert "asyncpg" not in refused.text
    assert "SELECT" not in body["detail"]
