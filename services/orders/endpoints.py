"""HTTP routes of the orders service (API.md, "orders service")."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Request
from starlette.responses import Response

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
from shared.auth import Principal, Role, StorefrontDep, ensure_seller, forbidden, require

router = APIRouter(prefix="/v1/orders", tags=["orders"])

ReaderDep = Annotated[Principal, Depends(require(Role.STOREFRONT, Role.ADMIN))]
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"content": {"application/problem+json": {}}} for code in (401, 403, 404, 409, 422)
}


async def _service(request: Request) -> OrderService:
    service: OrderService = request.app.state.orders
    return service


ServiceDep = Annotated[OrderService, Depends(_service)]


def _json(body: Any, status_code: int) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


@router.post(
    "",
    status_code=201,
    response_model=OrderOut,
    responses={200: {"model": OrderOut, "description": "a retry of the same order"}, **_PROBLEMS},
)
async def create_order(order: OrderIn, principal: StorefrontDep, service: ServiceDep) -> Response:
    ensure_seller(principal, order.seller_id)
    outcome = await service.create(order)
    return _json(outcome.body, 201 if outcome.created else 200)


@router.post("/batch", response_model=BatchOut, responses=_PROBLEMS)
async def create_orders_batch(
    batch: BatchIn, principal: StorefrontDep, service: ServiceDep
) -> Response:
    denied = sorted({o.seller_id for o in batch.orders if not principal.may_act_for(o.seller_id)})
    if denied:
        raise forbidden(f"token may not act for seller(s) {', '.join(map(repr, denied[:10]))}")
    accepted = await service.create_batch(batch.orders)
    return _json({"accepted": accepted}, 200)


@router.get("/{order_id}", response_model=OrderOut, responses=_PROBLEMS)
async def get_order(order_id: Key, principal: ReaderDep, service: ServiceDep) -> Response:
    return _json(await service.get(order_id, principal), 200)


@router.post("/{order_id}/complete", response_model=OrderOut, responses=_PROBLEMS)
async def complete_order(
    order_id: Key,
    principal: StorefrontDep,
    service: ServiceDep,
    body: Annotated[CompleteIn | None, Body()] = None,
) -> Response:
    completed_at = body.completed_at if body is not None else None
    return _json(await service.complete(order_id, principal, completed_at), 200)


@router.post("/{order_id}/cancel", response_model=OrderOut, responses=_PROBLEMS)
async def cancel_order(order_id: Key, principal: StorefrontDep, service: ServiceDep) -> Response:
    return _json(await service.cancel(order_id, principal), 200)


@router.post(
    "/{order_id}/refunds",
    status_code=201,
    response_model=RefundOut,
    responses={200: {"model": RefundOut, "description": "a retry of the same refund"}, **_PROBLEMS},
)
async def refund_order(
    order_id: Key, refund: RefundIn, principal: StorefrontDep, service: ServiceDep
) -> Response:
    outcome = await service.refund(order_id, principal, refund)
    return _json(outcome.body, 201 if outcome.created else 200)
