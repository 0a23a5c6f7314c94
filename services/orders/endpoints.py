"""HTTP routes of the orders service: ingest (single and batch), reads, moves, refunds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, Path, Request, Response
from pydantic import BaseModel, TypeAdapter, ValidationError
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


# -- the lean paths of the storefront's single-order calls ------------------------------
#
# ``POST /v1/orders`` and the moves a storefront makes on one order (complete, cancel,
# refund) are the hottest requests of the service, and FastAPI's layers (request object,
# dependency solving, body parsing through ``email.message``, response model validation
# and rendering) cost more CPU than the work itself. A ``LeanEndpoint`` serves a
# well-formed request directly: the same token check first, the same models validating
# the path id and the body, the same service call, the same body and status. Anything it
# does not take as it is (another content type, a body that is not a JSON object, any
# validation error) is replayed to the FastAPI routes above, which answer it exactly as
# before. Those stay declared for the OpenAPI schema; ``install_lean_routes`` puts the
# lean ones in front of them.

_JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})
_STOREFRONT = require(Role.STOREFRONT)
_PASSED_ON = "gfg.lean_passed_on"
_KEY: TypeAdapter[str] = TypeAdapter(Key)


class _PassOn(Exception):
    """What a lean handler raises for a request the FastAPI route is to answer."""


# A lean handler: (service, principal, the path's order_id, the JSON body or None when
# there is none) -> (status, response model). It checks its input before it calls the
# service, and raises ``_PassOn`` for any input it does not take.
LeanHandler = Callable[
    [OrderService, Principal, str, bytes | None], Awaitable[tuple[int, BaseModel]]
]


class LeanRoute(Route):
    """A route that steps aside for a request its endpoint passed on to the app's router."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_PASSED_ON):
            return Match.NONE, {}
        return super().matches(scope)


class LeanEndpoint:
    """An ASGI app answering one storefront call like its FastAPI route does."""

    def __init__(self, handle: LeanHandler) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The token first, before the body is read (a Problem: rendered by the app).
        principal = _STOREFRONT.check(Request(scope))
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
                break
        body = await _read_body(receive)
        try:
            if body and content_type not in _JSON_TYPES:
                raise _PassOn
            service: OrderService = scope["app"].state.service
            order_id = scope["path_params"].get("order_id", "")
            status, answer = await self.handle(service, principal, order_id, body or None)
        except _PassOn:
            scope[_PASSED_ON] = True
            await scope["app"].router(scope, _replay(body), send)
            return
        content = answer.__pydantic_serializer__.to_json(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


M = TypeVar("M", bound=BaseModel)


def _body(model: type[M], body: bytes | None) -> M:
    """The body as ``model``; anything else is the FastAPI route's to answer."""
    try:
        data = orjson.loads(body) if body is not None else None
        if not isinstance(data, dict):
            raise _PassOn
        return model.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise _PassOn from exc


def _key(order_id: str) -> str:
    try:
        return _KEY.validate_python(order_id)
    except ValidationError as exc:
        raise _PassOn from exc


async def _lean_create(
    service: OrderService, principal: Principal, _: str, body: bytes | None
) -> tuple[int, BaseModel]:
    stored = await service.create(_body(OrderIn, body), principal)
    return (201 if stored.created else 200), stored.item


async def _lean_complete(
    service: OrderService, principal: Principal, order_id: str, body: bytes | None
) -> tuple[int, BaseModel]:
    order_id = _key(order_id)
    completed_at = _body(CompleteIn, body).completed_at if body is not None else None
    return 200, await service.complete(order_id, principal, completed_at)


async def _lean_cancel(
    service: OrderService, principal: Principal, order_id: str, _: bytes | None
) -> tuple[int, BaseModel]:
    return 200, await service.cancel(_key(order_id), principal)


async def _lean_refund(
    service: OrderService, principal: Principal, order_id: str, body: bytes | None
) -> tuple[int, BaseModel]:
    order_id = _key(order_id)
    stored = await service.refund(order_id, principal, _body(RefundIn, body))
    return (201 if stored.created else 200), stored.item


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


_LEAN: list[tuple[str, LeanHandler, str]] = [
    ("", _lean_create, "create_order"),
    ("/{order_id}/complete", _lean_complete, "complete_order"),
    ("/{order_id}/cancel", _lean_cancel, "cancel_order"),
    ("/{order_id}/refunds", _lean_refund, "refund_order"),
]


def install_lean_routes(app: FastAPI) -> None:
    """Serves the storefront's single-order calls by lean endpoints, in front of their
    FastAPI routes (which stay in the OpenAPI schema and answer what is passed on)."""
    for index, (path, handle, name) in enumerate(_LEAN):
        lean = LeanRoute(router.prefix + path, LeanEndpoint(handle), methods=["POST"], name=name)
        app.router.routes.insert(index, lean)
