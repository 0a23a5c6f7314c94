"""A fast path: a plain Starlette route in front of a FastAPI route, for a hot read.

A FastAPI route costs about as much CPU again as the read it serves (dependency solving,
parameter validation, response validation and serialization). A ``FastPath`` takes the
requests of one GET route whose path parameters it accepts and hands them to a plain
endpoint that returns the same body and headers; every other request (a path parameter
FastAPI would refuse with a 422, another method) does not match it and goes on to the
FastAPI route, which stays in the router, and so in OpenAPI, and answers those exactly as
before. Both run under the same middleware and exception handlers: a ``DomainError``
raised by the endpoint is the same problem+json.

The app's router must try the fast path first: ``install_fast_paths(app, ...)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope


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


def install_fast_paths(app: FastAPI, *paths: FastPath) -> None:
    """Puts ``paths`` first in the app's router (before its FastAPI routes)."""
    app.router.routes[0:0] = paths
