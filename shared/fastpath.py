"""A fast path: a plain Starlette route in front of a FastAPI route, for a hot read.

A FastAPI route costs about as much CPU again as the read it serves (dependency solving,
parameter validation, response validation and serialization). A ``FastPath`` takes the
requests of one GET route whose path parameters it accepts and hands them to a plain
endpoint that returns the same body and headers; every other request (a path parameter
FastAPI would refuse with a 422, another method) does not match it and goes on to the
FastAPI route, which stays in the router, and so in OpenAPI, and answers those exactly as
before. Both run under the same middleware and exception handlers: a ``DomainError``
raised by the endpoint is the same problem+json.

A ``LeanRoute`` does the same for a hot call with a body (a ``POST``): its
``LeanEndpoint`` checks the token first, reads the body and hands it to a handler that
validates it with the route's own models and calls the same service method. Anything the
handler does not take as it is (another content type, a body that is not a JSON object,
any validation error) it refuses with ``PassOn``, and the request is replayed, body and
all, to the app's router, where the lean route steps aside and the FastAPI route answers
it exactly as before. A handler checks its input before it calls the service, so a replay
never repeats database work.

The app's router must try the fast paths first: ``install_fast_paths(app, ...)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Message, Receive, Scope, Send

from shared.auth import Principal

_JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})
_PASSED_ON = "gfg.lean_passed_on"


class FastPath(Route):
    """``GET path`` (not HEAD: FastAPI's GET routes do not answer it) for the requests
    whose path parameters ``accept`` allows."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        accept: Callable[[Mapping[str, Any]], bool],
        name: str,
    ) -> None:
        super().__init__(path, endpoint, methods=["GET"], name=name, include_in_schema=False)
        self.methods = {"GET"}
        self._accept = accept

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.FULL or not self._accept(child["path_params"]):
            return Match.NONE, {}
        return match, child


class PassOn(Exception):
    """What a lean handler raises for a request the FastAPI route is to answer."""


# A lean handler: (the request's scope, the principal, the JSON body or None when there
# is none) -> (status, response model). It checks its input before it calls the service,
# and raises ``PassOn`` for any input it does not take.
LeanHandler = Callable[[Scope, Principal, bytes | None], Awaitable[tuple[int, BaseModel]]]


class LeanEndpoint:
    """An ASGI app answering one call like its FastAPI route does."""

    def __init__(self, handle: LeanHandler, check: Callable[[Request], Principal]) -> None:
        self.handle = handle
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The token first, before the body is read (a Problem: rendered by the app).
        principal = self.check(Request(scope))
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
                break
        body = await _read_body(receive)
        try:
            if body and content_type not in _JSON_TYPES:
                raise PassOn
            status, answer = await self.handle(scope, principal, body or None)
        except PassOn:
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


class LeanRoute(Route):
    """``POST path`` served by a ``LeanEndpoint``; it steps aside for a request its
    endpoint passed on to the app's router."""

    def __init__(
        self,
        path: str,
        handle: LeanHandler,
        *,
        check: Callable[[Request], Principal],
        name: str,
    ) -> None:
        super().__init__(path, LeanEndpoint(handle, check), methods=["POST"], name=name)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_PASSED_ON):
            return Match.NONE, {}
        return super().matches(scope)


M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M], body: bytes | None) -> M:
    """The body as ``model``; anything else is the FastAPI route's to answer."""
    try:
        data = orjson.loads(body) if body is not None else None
        if not isinstance(data, dict):
            raise PassOn
        return model.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise PassOn from exc


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


def install_fast_paths(app: FastAPI, *paths: BaseRoute) -> None:
    """Puts ``paths`` first in the app's router (before its FastAPI routes)."""
    app.router.routes[0:0] = paths
