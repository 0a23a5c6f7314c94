"""HTTP routes of the orders service: ingest (single and batch), reads, moves, refunds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Response
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.types import Scope

from services.orders.schemas import (
    BatchIn,
    BatchOut,
    CompleteIn,
    Key,
    OrderIn,
    OrderOut,
    RefundIn,
    RefundOut,
    decode_batch,
)
from services.orders.service import OrderService
from shared.auth import AuthFirstRoute, Principal, Role, require
from shared.fastpath import LeanRoute, PassOn, json_body
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


# -- the lean paths of the storefront's single-order calls ------------------------------
#
# ``POST /v1/orders`` and the moves a storefront makes on one order (complete, cancel,
# refund) are the hottest requests of the service, and FastAPI's layers (request object,
# dependency solving, body parsing, response model validation and rendering) cost more CPU
# than the work itself. Each is also served by a ``shared.fastpath.LeanRoute`` in front of
# its FastAPI route: the same token check first, the same models validating the path id
# and the body, the same service call, the same body and status. What a lean handler does
# not take as it is goes on to the FastAPI route, which stays declared (and so in the
# OpenAPI schema) and answers it exactly as before.

_STOREFRONT = require(Role.STOREFRONT)
_KEY: TypeAdapter[str] = TypeAdapter(Key)


def _service(scope: Scope) -> OrderService:
    service: OrderService = scope["app"].state.service
    return service


def _key(scope: Scope) -> str:
    try:
        return _KEY.validate_python(scope["path_params"].get("order_id", ""))
    except ValidationError as exc:
        raise PassOn from exc


async def _lean_create(
    scope: Scope, principal: Principal, body: bytes | None
) -> tuple[int, BaseModel]:
    stored = await _service(scope).create(json_body(OrderIn, body), principal)
    return (201 if stored.created else 200), stored.item


async def _lean_complete(
    scope: Scope, principal: Principal, body: bytes | None
) -> tuple[int, BaseModel]:
    order_id = _key(scope)
    completed_at = json_body(CompleteIn, body).completed_at if body is not None else None
    return 200, await _service(scope).complete(order_id, principal, completed_at)


async def _lean_cancel(
    scope: Scope, principal: Principal, _: bytes | None
) -> tuple[int, BaseModel]:
    return 200, await _service(scope).cancel(_key(scope), principal)


async def _lean_refund(
    scope: Scope, principal: Principal, body: bytes | None
) -> tuple[int, BaseModel]:
    order_id = _key(scope)
    stored = await _service(scope).refund(order_id, principal, json_body(RefundIn, body))
    return (201 if stored.created else 200), stored.item


async def _lean_batch(
    scope: Scope, principal: Principal, body: bytes | None
) -> tuple[int, BaseModel]:
    # The batch body is read by msgspec first (``decode_batch``: a narrower schema, the
    # same orders); what it leaves is validated from the raw bytes by pydantic-core in one
    # pass, and any error there passes the request on to the FastAPI route, which builds
    # the same 422 as before.
    raw = body if body is not None else b""
    orders = decode_batch(raw)
    if orders is None:
        try:
            batch = BatchIn.model_validate_json(raw)
        except ValidationError as exc:
            raise PassOn from exc
        return 200, BatchOut(accepted=await _service(scope).create_batch(batch.orders, principal))
    return 200, BatchOut(accepted=await _service(scope).create_batch(orders, principal))


LEAN_ROUTES = [
    LeanRoute(router.prefix + path, handle, check=_STOREFRONT.check, name=name)
    for path, handle, name in [
        ("", _lean_create, "create_order"),
        ("/{order_id}/complete", _lean_complete, "complete_order"),
        ("/{order_id}/cancel", _lean_cancel, "cancel_order"),
        ("/{order_id}/refunds", _lean_refund, "refund_order"),
        ("/batch", _lean_batch, "create_orders_batch"),
    ]
]
