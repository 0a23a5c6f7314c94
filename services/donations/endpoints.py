"""HTTP routes of the donations service: seller rules, seller statements, order receipts,
matching campaigns."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from services.donations.schemas import (
    CampaignIn,
    CampaignOut,
    CampaignsOut,
    OrderProofOut,
    ReceiptOut,
    RuleIn,
    RuleOut,
    RuleVersionsOut,
    StatementOut,
)
from services.donations.service import DonationService
from shared.auth import AdminDep, AuthFirstRoute, Principal, Role, require
from shared.fastpath import FastPath
from shared.problems import problem_responses
from shared.types import Text, storable_text
from shared.web import app_service

router = APIRouter(
    prefix="/v1",
    tags=["donations"],
    route_class=AuthFirstRoute,
    responses=problem_responses(401, 403, 404, 413, 422, 503),
)

SellerId = Annotated[Text, Path(min_length=1, max_length=64, description="The seller.")]
OrderId = Annotated[Text, Path(min_length=1, max_length=64, description="The order.")]
CampaignIdPath = Annotated[
    Text, Path(min_length=1, max_length=64, description="The campaign's id.")
]
Cursor = Annotated[
    Text | None, Query(max_length=512, description="The `next_cursor` of the previous page.")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Most items on the page.")]
OwnSellerDep = Annotated[Principal, Depends(require(Role.SELLER))]
SellerDep = Annotated[Principal, Depends(require(Role.SELLER, Role.ADMIN))]
ServiceDep = Annotated[DonationService, Depends(app_service)]


@router.put("/sellers/{seller_id}/donation-rule")
async def put_rule(
    seller_id: SellerId, body: RuleIn, principal: OwnSellerDep, service: ServiceDep
) -> RuleOut:
    """Sets the seller's rule: a new version, effective from now (server time, UTC)."""
    return await service.set_rule(principal, seller_id, body)


@router.get("/sellers/{seller_id}/donation-rule")
async def get_rule(seller_id: SellerId, principal: SellerDep, service: ServiceDep) -> RuleOut:
    return await service.rule(principal, seller_id)


@router.get("/sellers/{seller_id}/donation-rule/versions")
async def get_rule_versions(
    seller_id: SellerId,
    principal: SellerDep,
    service: ServiceDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> RuleVersionsOut:
    """All versions of the seller's rule, newest first (empty if never set)."""
    return await service.rule_versions(principal, seller_id, limit, cursor)


@router.get("/sellers/{seller_id}/donations")
async def get_statement(
    seller_id: SellerId,
    principal: SellerDep,
    service: ServiceDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> StatementOut:
    """The seller's ledger entries, oldest first, and its net donation per currency."""
    return await service.statement(principal, seller_id, limit, cursor)


@router.get("/orders/{order_id}/donation")
async def get_receipt(order_id: OrderId, service: ServiceDep) -> ReceiptOut:
    """Public receipt of the donation an order made (404 if it made none)."""
    return await service.receipt(order_id)


@router.post("/campaigns", status_code=status.HTTP_201_CREATED)
async def post_campaign(
    body: CampaignIn, _admin: AdminDep, service: ServiceDep, response: Response
) -> CampaignOut:
    """Creates a matching campaign (201); the same body again is 200, another body 409."""
    campaign, created = await service.create_campaign(body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return campaign


@router.get("/campaigns")
async def get_campaigns(
    service: ServiceDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    project_id: Annotated[
        uuid.UUID | None, Query(description="Only this project's campaigns.")
    ] = None,
) -> CampaignsOut:
    """Matching campaigns in campaign_id order, optionally of one project."""
    return await service.campaigns(project_id, limit, cursor)


@router.get("/campaigns/{campaign_id}")
async def get_campaign(campaign_id: CampaignIdPath, service: ServiceDep) -> CampaignOut:
    return await service.campaign(campaign_id)


@router.post("/campaigns/{campaign_id}/close")
async def close_campaign(
    campaign_id: CampaignIdPath, _admin: AdminDep, service: ServiceDep
) -> CampaignOut:
    """Ends the campaign now: nothing more is matched."""
    return await service.close_campaign(campaign_id)


PROOF_PATH = "/v1/orders/{order_id}/donation/proof"


@router.get(PROOF_PATH.removeprefix("/v1"), response_model=OrderProofOut)
async def get_proof(order_id: OrderId, service: ServiceDep) -> Response:
    """The order's entries in the donations transparency log, with inclusion proofs
    against one signed checkpoint (404 if it made no donation, 503 until logged)."""
    return Response(await service.order_proof(order_id), media_type="application/json")


def _valid_order_id(params: Mapping[str, Any]) -> bool:
    """Whether ``OrderId`` accepts the path's order id (else FastAPI answers the 422)."""
    order_id: str = params["order_id"]
    if not 1 <= len(order_id) <= 64:
        return False
    try:
        storable_text(order_id)
    except ValueError:
        return False
    return True


async def _fast_proof(request: Request) -> Response:
    service: DonationService = request.app.state.service
    body = await service.order_proof(request.path_params["order_id"])
    return Response(body, media_type="application/json")


# The proof endpoint is the hot public read: served without FastAPI's per-request layers
# for every valid order id (the route above stays for OpenAPI and for invalid ids).
FAST_PATHS = (FastPath(PROOF_PATH, _fast_proof, accept=_valid_order_id, name="get_proof"),)
