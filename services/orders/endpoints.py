"""HTTP routes of the orders service: ingest (single and batch), reads, moves, refunds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Response

from services.orders.schemas import (
    BatchIn,
    BatchOut,
    CompleteIn,
    Key,
    OrderIn,
    OrderOut,
    RefundIn,
    RefundOut,
)
from services.orders.service import OrderService
from shared.auth import AuthFirstRoute, Principal, Role, require
from shared.problems import problem_responses
from shared.web import app_service

router = APIRouter(prefix="/v1/orders", tags=["orders"], route_class=AuthFirstRoute)

StorefrontDep = Annotated[Principal, Depends(require(Role.STOREFRONT))]
ReaderDep = Annotated[Principal, Depends(require(Role.STOREFRONT, Role.ADMIN))]
ServiceDep = Annotated[OrderService, Depends(app_service)]
OrderId = Annotated[Key, Path(description="The order's id.")]
_PROBLEMS = problem_responses(401, 403, 404, 409, 413, 422)


@router.post(
    "",
    status_code=201,
    responses={200: {"model": OrderOut, "description": "a retry of the same order"}, **_PROBLEMS},
)
async def create_order(
    order: OrderIn, principal: StorefrontDep, service: ServiceDep, response: Response
) -> OrderOut:
    stored = await service.create(order, principal)
    if not stored.created:
        response.status_code = 200
    return stored.item


@router.post("/batch", responses=_PROBLEMS)
async def create_orders_batch(
    batch: BatchIn, principal: StorefrontDep, service: ServiceDep
) -> BatchOut:
    return BatchOut(accepted=await service.create_batch(batch.orders, principal))


@router.get("/{order_id}", responses=_PROBLEMS)
async def get_order(order_id: OrderId, principal: ReaderDep, service: ServiceDep) -> OrderOut:
    return await service.get(order_id, principal)


@router.post("/{order_id}/complete", responses=_PROBLEMS)
async def complete_order(
    order_id: OrderId,
    principal: StorefrontDep,
    service: ServiceDep,
    body: Annotated[CompleteIn | None, Body()] = None,
) -> OrderOut:
    completed_at = body.completed_at if body is not None else None
    return await service.complete(order_id, principal, completed_at)


@router.post("/{order_id}/cancel", responses=_PROBLEMS)
async def cancel_order(
    order_id: OrderId, principal: StorefrontDep, service: ServiceDep
) -> OrderOut:
    return await service.cancel(order_id, principal)


@router.post(
    "/{order_id}/refunds",
    status_code=201,
    responses={200: {"model": RefundOut, "description": "a retry of the same refund"}, **_PROBLEMS},
)
async def refund_order(
    order_id: OrderId,
    refund: RefundIn,
    principal: StorefrontDep,
    service: ServiceDep,
    response: Response,
) -> RefundOut:
    stored = await service.refund(order_id, principal, refund)
    if not stored.created:
        response.status_code = 200
    return stored.item
