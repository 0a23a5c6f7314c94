"""HTTP routes of the charities service: registry, totals, disbursements, the trace of an
order, and the dashboard pages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from services.charities.schemas import (
    AllTotals,
    Charity,
    CharityCreate,
    CharityPage,
    CharityTotals,
    DailyTotals,
    Disbursement,
    DisbursementCreate,
    DisbursementPage,
    DisbursementProofOut,
    DonationProof,
    OrderTrace,
    Project,
    ProjectCampaigns,
    ProjectCreate,
    ProjectPage,
    ProjectStatus,
    Totals,
)
from services.charities.service import Cached, CharityService
from shared.auth import AdminDep, AuthFirstRoute, Principal, Role, require
from shared.problems import problem_responses
from shared.types import Day, Text
from shared.web import app_service, conditional_response

STATIC_DIR = Path(__file__).parent / "static"
CACHE_CONTROL = "public, max-age=1"
CAMPAIGNS_CACHE_CONTROL = "public, max-age=5"

ServiceDep = Annotated[CharityService, Depends(app_service)]
IfNoneMatch = Annotated[
    str | None, Header(description="ETags the client holds: 304 if one is current.")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Most items on the page.")]
Cursor = Annotated[
    Text | None, Query(max_length=512, description="The `next_cursor` of the previous page.")
]
CharityId = Annotated[Text, PathParam(description="The charity's id (a UUID).")]
ProjectId = Annotated[Text, PathParam(description="The project's id (a UUID).")]
DisbursementId = Annotated[Text, PathParam(description="The disbursement's id (a UUID).")]
OrderId = Annotated[Text, PathParam(max_length=64, description="The storefront's order id.")]
DisburserDep = Annotated[Principal, Depends(require(Role.ADMIN, Role.CHARITY))]

router = APIRouter(
    prefix="/v1",
    route_class=AuthFirstRoute,
    responses=problem_responses(401, 403, 404, 409, 413, 422),
)


def _created(response: Response, created: bool) -> None:
    if not created:
        response.status_code = 200


def _conditional(cached: Cached, if_none_match: str | None) -> Response:
    return conditional_response(
        cached.body, cached.etag, if_none_match, cache_control=CACHE_CONTROL
    )


# --- registry -------------------------------------------------------------------------


@router.post(
    "/charities",
    status_code=201,
    responses={200: {"model": Charity, "description": "the same charity created before"}},
)
async def create_charity(
    body: CharityCreate, _: AdminDep, service: ServiceDep, response: Response
) -> Charity:
    charity, created = await service.create_charity(body)
    _created(response, created)
    return charity


@router.get("/charities")
async def list_charities(
    service: ServiceDep, limit: Limit = 50, cursor: Cursor = None
) -> CharityPage:
    return await service.list_charities(limit, cursor)


@router.get("/charities/{charity_id}")
async def get_charity(charity_id: CharityId, service: ServiceDep) -> Charity:
    return await service.get_charity(charity_id)


@router.post(
    "/charities/{charity_id}/projects",
    status_code=201,
    responses={200: {"model": Project, "description": "the same project created before"}},
)
async def create_project(
    charity_id: CharityId, body: ProjectCreate, _: AdminDep, service: ServiceDep, response: Response
) -> Project:
    project, created = await service.create_project(charity_id, body)
    _created(response, created)
    return project


@router.get("/projects")
async def list_projects(
    service: ServiceDep,
    charity_id: Annotated[uuid.UUID | None, Query(description="Only this charity's.")] = None,
    status: Annotated[ProjectStatus | None, Query(description="Only in this status.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ProjectPage:
    return await service.list_projects(
        charity_id=charity_id, status=status, limit=limit, cursor=cursor
    )


@router.get("/projects/{project_id}")
async def get_project(project_id: ProjectId, service: ServiceDep) -> Project:
    return await service.get_project(project_id)


@router.post("/projects/{project_id}/close")
async def close_project(project_id: ProjectId, _: AdminDep, service: ServiceDep) -> Project:
    return await service.close_project(project_id)


# --- disbursements and the trace -------------------------------------------------------


@router.post(
    "/projects/{project_id}/disbursements",
    status_code=201,
    responses={
        200: {"model": Disbursement, "description": "the same disbursement, recorded before"}
    },
)
async def create_disbursement(
    project_id: ProjectId,
    body: DisbursementCreate,
    principal: DisburserDep,
    service: ServiceDep,
    response: Response,
) -> Disbursement:
    disbursement, created = await service.create_disbursement(principal, project_id, body)
    _created(response, created)
    return disbursement


@router.get("/projects/{project_id}/disbursements")
async def list_disbursements(
    project_id: ProjectId, service: ServiceDep, limit: Limit = 50, cursor: Cursor = None
) -> DisbursementPage:
    return await service.list_disbursements(project_id, limit, cursor)


@router.get("/disbursements/{disbursement_id}")
async def get_disbursement(disbursement_id: DisbursementId, service: ServiceDep) -> Disbursement:
    return await service.get_disbursement(disbursement_id)


@router.get("/disbursements/{disbursement_id}/proof", responses=problem_responses(503))
async def get_disbursement_proof(
    disbursement_id: DisbursementId, service: ServiceDep
) -> DisbursementProofOut:
    """The disbursement and its allocations in the charities transparency log, with
    inclusion proofs against one signed checkpoint (404 if unknown, 503 until logged)."""
    return await service.disbursement_proof(disbursement_id)


@router.get("/orders/{order_id}/trace")
async def order_trace(order_id: OrderId, service: ServiceDep) -> OrderTrace:
    return await service.trace(order_id)


# --- the donations log, relayed for the pages' "check my donation" --------------------


@router.get("/orders/{order_id}/donation/proof", responses=problem_responses(503))
async def donation_proof(order_id: OrderId, service: ServiceDep) -> DonationProof:
    """The order's proof in the donations transparency log, relayed from the donations
    service unverified (the page verifies it with the key below)."""
    return await service.donation_proof(order_id)


@router.get("/donations-log/key", response_class=Response, responses=problem_responses(503))
async def donations_log_key(service: ServiceDep) -> Response:
    """The donations log's verifier key this service pins (Go sumdb/note format)."""
    key = await service.donations_verifier_key()
    return Response(key, media_type="text/plain; charset=utf-8")


# --- totals (ETag / 304 reads: cached JSON bytes, not models) ---------------------------

_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "unchanged since the ETag in If-None-Match"}
}


@router.get("/totals", response_model=AllTotals, responses=_NOT_MODIFIED)
async def all_totals(service: ServiceDep, if_none_match: IfNoneMatch = None) -> Response:
    return _conditional(await service.all_totals(), if_none_match)


@router.get("/projects/{project_id}/totals", response_model=Totals, responses=_NOT_MODIFIED)
async def project_totals(
    project_id: ProjectId, service: ServiceDep, if_none_match: IfNoneMatch = None
) -> Response:
    return _conditional(await service.project_totals(project_id), if_none_match)


@router.get("/charities/{charity_id}/totals", response_model=CharityTotals, responses=_NOT_MODIFIED)
async def charity_totals(
    charity_id: CharityId, service: ServiceDep, if_none_match: IfNoneMatch = None
) -> Response:
    return _conditional(await service.charity_totals(charity_id), if_none_match)


@router.get(
    "/projects/{project_id}/totals/daily",
    response_model=list[DailyTotals],
    responses=_NOT_MODIFIED,
)
async def daily_totals(
    project_id: ProjectId,
    service: ServiceDep,
    start: Annotated[
        Day | None, Query(alias="from", description="First UTC day (default: to - 29 days).")
    ] = None,
    end: Annotated[
        Day | None, Query(alias="to", description="Last UTC day (default: today).")
    ] = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=29)
    return _conditional(await service.daily_totals(project_id, start, end), if_none_match)


@router.get(
    "/projects/{project_id}/campaigns", response_model=ProjectCampaigns, responses=_NOT_MODIFIED
)
async def project_campaigns(
    project_id: ProjectId, service: ServiceDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The project's matching campaigns, asked of the donations service (for the dashboard,
    which may only call this service); a degraded answer rather than an error when
    donations is down."""
    return conditional_response(
        (cached := await service.project_campaigns(project_id)).body,
        cached.etag,
        if_none_match,
        cache_control=CAMPAIGNS_CACHE_CONTROL,
    )


# --- dashboard ------------------------------------------------------------------------

pages = APIRouter(include_in_schema=False)


@pages.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@pages.get("/projects/{project_id}")
async def project_page(project_id: str) -> FileResponse:
    """A project's page (its script reads the id from the path)."""
    return FileResponse(STATIC_DIR / "project.html", headers={"Cache-Control": "no-cache"})


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
            service: CharityService | None = getattr(scope["app"].state, "service", None)
            cached = service.fresh_all_totals() if service is not None else None
            if cached is not None:
                if_none_match = None
                for name, value in scope["headers"]:
                    if name == b"if-none-match":
                        if_none_match = value.decode("latin-1")
                        break
                await _conditional(cached, if_none_match)(scope, receive, send)
                return
        await self.app(scope, receive, send)
