"""HTTP endpoints of the charities service: registry, totals, and the dashboard page."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from services.charities import repository, service
from services.charities.schemas import (
    AllTotals,
    Charity,
    CharityCreate,
    CharityPage,
    CharityTotals,
    DailyTotals,
    Project,
    ProjectCreate,
    ProjectPage,
    ProjectStatus,
    Totals,
)
from services.charities.service import Cached, ResponseCache
from shared.auth import AdminDep
from shared.web import PoolDep

STATIC_DIR = Path(__file__).parent / "static"
CACHE_CONTROL = "public, max-age=1"


def _cache(request: Request) -> ResponseCache:
    cache: ResponseCache = request.app.state.totals_cache
    return cache


CacheDep = Annotated[ResponseCache, Depends(_cache)]
IfNoneMatch = Annotated[str | None, Header()]
Limit = Annotated[int, Query(ge=1, le=1000)]

router = APIRouter(prefix="/v1")


def _created(response: Response, created: bool) -> None:
    if not created:
        response.status_code = 200


# --- registry -------------------------------------------------------------------------


@router.post(
    "/charities",
    status_code=201,
    response_model=Charity,
    responses={200: {"model": Charity, "description": "the same charity created before"}},
)
async def create_charity(
    body: CharityCreate, _: AdminDep, pool: PoolDep, response: Response
) -> dict[str, Any]:
    charity, created = await service.create_charity(pool, body)
    _created(response, created)
    return charity


@router.get("/charities", response_model=CharityPage)
async def list_charities(
    pool: PoolDep, limit: Limit = 50, cursor: str | None = None
) -> dict[str, Any]:
    after = service.decode_cursor(cursor) if cursor else None
    rows = await repository.list_charities(pool, after, limit + 1)
    items, next_cursor = service.page(rows, limit, "charity_id")
    return {"items": items, "next_cursor": next_cursor}


@router.get("/charities/{charity_id}", response_model=Charity)
async def get_charity(charity_id: str, pool: PoolDep) -> dict[str, Any]:
    return await service.get_charity(pool, charity_id)


@router.post(
    "/charities/{charity_id}/projects",
    status_code=201,
    response_model=Project,
    responses={200: {"model": Project, "description": "the same project created before"}},
)
async def create_project(
    charity_id: str, body: ProjectCreate, _: AdminDep, pool: PoolDep, response: Response
) -> dict[str, Any]:
    project, created = await service.create_project(pool, charity_id, body)
    _created(response, created)
    return project


@router.get("/projects", response_model=ProjectPage)
async def list_projects(
    pool: PoolDep,
    charity_id: uuid.UUID | None = None,
    status: ProjectStatus | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    after = service.decode_cursor(cursor) if cursor else None
    rows = await repository.list_projects(
        pool, charity_id=charity_id, status=status, after=after, limit=limit + 1
    )
    items, next_cursor = service.page(rows, limit, "project_id")
    return {"items": items, "next_cursor": next_cursor}


@router.get("/projects/{project_id}", response_model=Project)
async def get_project(project_id: str, pool: PoolDep) -> dict[str, Any]:
    return await service.get_project(pool, project_id)


@router.post("/projects/{project_id}/close", response_model=Project)
async def close_project(project_id: str, _: AdminDep, pool: PoolDep) -> dict[str, Any]:
    return await service.close_project(pool, project_id)


# --- totals ---------------------------------------------------------------------------


def _conditional(cached: Cached, if_none_match: str | None) -> Response:
    headers = {"ETag": cached.etag, "Cache-Control": CACHE_CONTROL}
    if service.etag_matches(if_none_match, cached.etag):
        return Response(status_code=304, headers=headers)
    return Response(cached.body, media_type="application/json", headers=headers)


def _by_body(body: Any) -> Cached:
    raw = service.dumps(body)
    return Cached(service.body_etag(raw), raw, None, 0.0)


@router.get(
    "/totals",
    response_model=AllTotals,
    responses={304: {"description": "unchanged since the ETag in If-None-Match"}},
)
async def all_totals(pool: PoolDep, cache: CacheDep, if_none_match: IfNoneMatch = None) -> Response:
    async def load(previous: Cached | None) -> Cached:
        clock = await repository.clock(pool)
        if previous is not None and previous.token == clock["version"]:
            return Cached(previous.etag, previous.body, previous.token, 0.0)
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            clock = await repository.clock(conn)
            rows = await repository.all_totals(conn)
        raw = service.dumps(service.all_totals_body(rows, clock["changed_at"]))
        return Cached(f'"v{clock["version"]}"', raw, clock["version"], 0.0)

    return _conditional(await cache.get("totals", load), if_none_match)


@router.get(
    "/projects/{project_id}/totals",
    response_model=Totals,
    responses={304: {"description": "unchanged since the ETag in If-None-Match"}},
)
async def project_totals(
    project_id: str, pool: PoolDep, cache: CacheDep, if_none_match: IfNoneMatch = None
) -> Response:
    key = service.parse_id(project_id, "project")

    async def load(previous: Cached | None) -> Cached:
        rows = await repository.project_totals(pool, key)
        return _by_body(service.project_totals_body(project_id, rows))

    return _conditional(await cache.get(f"project:{key}", load), if_none_match)


@router.get(
    "/charities/{charity_id}/totals",
    response_model=CharityTotals,
    responses={304: {"description": "unchanged since the ETag in If-None-Match"}},
)
async def charity_totals(
    charity_id: str, pool: PoolDep, cache: CacheDep, if_none_match: IfNoneMatch = None
) -> Response:
    key = service.parse_id(charity_id, "charity")

    async def load(previous: Cached | None) -> Cached:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            await service.get_charity(conn, charity_id)
            rows = await repository.charity_totals(conn, key)
        return _by_body(service.charity_totals_body(key, rows))

    return _conditional(await cache.get(f"charity:{key}", load), if_none_match)


@router.get(
    "/projects/{project_id}/totals/daily",
    response_model=list[DailyTotals],
    responses={304: {"description": "unchanged since the ETag in If-None-Match"}},
)
async def daily_totals(
    project_id: str,
    pool: PoolDep,
    cache: CacheDep,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    key = service.parse_id(project_id, "project")
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=29)
    service.check_range(start, end)

    async def load(previous: Cached | None) -> Cached:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            totals = service.project_totals_body(
                project_id, await repository.project_totals(conn, key)
            )
            rows = await repository.daily_totals(conn, key, totals["currency"], start, end)
        return _by_body(service.daily_body(rows))

    return _conditional(await cache.get(f"daily:{key}:{start}:{end}", load), if_none_match)


# --- dashboard ------------------------------------------------------------------------

pages = APIRouter(include_in_schema=False)


@pages.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


class TotalsFastPath:
    """Answers ``GET /v1/totals`` straight from the fresh cache entry, before routing.

    The dashboard endpoint is the one polled by every open dashboard every second; while
    its cached (ETag, body) is fresh, a request costs a dictionary lookup here instead of
    FastAPI's routing and dependency resolution. Anything else passes through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/totals" and scope["method"] == "GET":
            cache: ResponseCache | None = getattr(scope["app"].state, "totals_cache", None)
            cached = cache.fresh("totals") if cache is not None else None
            if cached is not None:
                if_none_match = None
                for name, value in scope["headers"]:
                    if name == b"if-none-match":
                        if_none_match = value.decode("latin-1")
                        break
                await _conditional(cached, if_none_match)(scope, receive, send)
                return
        await self.app(scope, receive, send)
