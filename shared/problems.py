"""RFC 9457 problem responses: one exception type, one set of handlers, one size limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 1024 * 1024
_TYPE_BASE = "https://goodsforgood.dev/problems/"


class Problem(Exception):
    """A client-facing error; raise it anywhere below an endpoint."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        errors: Sequence[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": _TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def not_found(what: str, key: str) -> Problem:
    return Problem(404, "not-found", f"{what} not found", f"no {what} with id {key!r}")


def conflict(detail: str, **extra: Any) -> Problem:
    return Problem(409, "conflict", "Conflict", detail, **extra)


def unprocessable(field: str, message: str) -> Problem:
    return Problem(
        422,
        "validation-error",
        "Validation failed",
        f"{field}: {message}",
        errors=[{"field": field, "message": message}],
    )


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    return Response(
        orjson.dumps(problem.body(instance)),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _field_name(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_problem(errors: Sequence[Any]) -> Problem:
    fields = [
        {"field": _field_name(err.get("loc", ())), "message": str(err.get("msg", "invalid"))}
        for err in errors
    ]
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return Problem(422, "validation-error", "Validation failed", detail, errors=fields)


_STATUS_KIND = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    503: "unavailable",
}


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(exc.errors()), request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _STATUS_KIND.get(exc.status_code, "error")
        title = kind.replace("-", " ").capitalize()
        problem = Problem(
            exc.status_code, kind, title, str(exc.detail), headers=dict(exc.headers or {})
        )
        return problem_response(problem, request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


class BodySizeLimit:
    """Refuses request bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = Problem(
            413,
            "payload-too-large",
            "Payload too large",
            f"request bodies are limited to {self.limit} bytes",
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await problem_response(too_large, scope.get("path"))(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large
            return message

        try:
            await self.app(scope, limited_receive, send)
        except Problem as exc:
            if exc is not too_large:
                raise
            await problem_response(too_large, scope.get("path"))(scope, receive, send)
