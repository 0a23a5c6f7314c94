"""HTTP routes of the orders service: ingest (single and batch), reads, moves, refunds."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, Path, Request, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

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


# -- the lean path of single ingest -----------------------------------------------------
#
# ``POST /v1/orders`` is the hottest request of the service, and FastAPI's layers (request
# object, dependency solving, body parsing through ``email.message``, response model
# validation and rendering) cost more CPU than the order itself. ``LeanCreateOrder`` serves
# a well-formed request directly: the same token check first, the same ``OrderIn``
# validation, the same service call, the same body and status. Anything it does not
# accept as is (another content type, a body that is not a JSON object, a validation
# error) is replayed to the FastAPI route above, which answers it exactly as before. The
# route stays declared for the OpenAPI schema; ``install_lean_routes`` puts the lean one
# in front of it.

_JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})
_STOREFRONT = require(Role.STOREFRONT)


_PASSED_ON = "gfg.lean_passed_on"


class LeanRoute(Route):
    """A route that steps aside for a request its endpoint passed on to the app's router."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_PASSED_ON):
            return Match.NONE, {}
        return super().matches(scope)


class LeanCreateOrder:
    """An ASGI app answering ``POST /v1/orders`` like ``create_order`` does."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The token first, before the body is read (a Problem: rendered by the app).
        principal = _STOREFRONT.check(Request(scope))
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
                break
        body = await _read_body(receive)
        order = _order(body) if content_type in _JSON_TYPES else None
        if order is None:
            scope[_PASSED_ON] = True
            await scope["app"].router(scope, _replay(body), send)
            return
        service: OrderService = scope["app"].state.service
        stored = await service.create(order, principal)
        content = _ORDER_OUT.to_json(stored.item)
        await send(
            {
                "type": "http.response.start",
                "status": 201 if stored.created else 200,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


_ORDER_OUT = OrderOut.__pydantic_serializer__


def _order(body: bytes) -> OrderIn | None:
    """The order if ``body`` is a valid one; None for FastAPI to answer."""
    try:
        data = orjson.loads(body)
        if not isinstance(data, dict):
            return None
        return OrderIn.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError):
        return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def install_lean_routes(app: FastAPI) -> None:
    """Serves ``POST /v1/orders`` by ``LeanCreateOrder``, in front of the FastAPI route
    (which stays in the OpenAPI schema and answers what the lean one passes on)."""
    lean = LeanRoute("/v1/orders", LeanCreateOrder(), methods=["POST"], name="create_order")
    app.router.routes.insert(0, lean)
