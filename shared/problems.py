"""Errors a client can cause, and how they look on the wire (RFC 9457 problem+json).

Service layers raise ``DomainError`` subclasses: each class carries its HTTP status, its
problem type slug (``kind``) and its title, so the service layer says what went wrong
and never how it is rendered. One set of handlers (``install_problem_handlers``) turns
any of them, request validation errors, Starlette's HTTP errors and the database's
refusals of a client's value (asyncpg's ``DataError`` family, 422) into problem+json.
Anything else is a bug: ``shared.web.RequestLayer`` logs it with its traceback and still answers a
well-formed 500 problem that names no internals, on a connection that stays open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = structlog.stdlib.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 1024 * 1024
_TYPE_BASE = "https://goodsforgood.dev/problems/"
# How many field errors a validation problem's ``detail`` names (``errors`` has them all).
_DETAIL_FIELDS = 5


class DomainError(Exception):
    """A client-facing error: raise a subclass anywhere below an endpoint.

    ``errors`` lists field errors (``{"field", "message"}``), ``headers`` go on the
    response (e.g. Retry-After), and extra keyword members are added to the body.
    """

    status: int = 500
    kind: str = "error"
    title: str = "Error"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
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


class Problem(DomainError):
    """An error whose status, type and title are given per instance (HTTP-level errors)."""

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
        super().__init__(detail, errors=errors, headers=headers, **extra)
        self.status = status
        self.kind = kind
        self.title = title


class NotFound(DomainError):
    status = 404
    kind = "not-found"

    def __init__(self, what: str, key: str, **extra: Any) -> None:
        super().__init__(f"no {what} with id {key!r}", **extra)
        self.title = f"{what} not found"


class Conflict(DomainError):
    status = 409
    kind = "conflict"
    title = "Conflict"


class Invalid(DomainError):
    """422 with one ``errors`` entry per offending field."""

    status = 422
    kind = "validation-error"
    title = "Validation failed"

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        fields = [{"field": field, "message": message} for field, message in errors]
        detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:_DETAIL_FIELDS])
        super().__init__(detail, errors=fields)


class Unavailable(DomainError):
    """A dependency could not answer; the client may retry after ``retry_after`` seconds."""

    status = 503
    kind = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 2, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extra)


class Unauthorized(DomainError):
    status = 401
    kind = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    status = 403
    kind = "forbidden"
    title = "Forbidden"


class PayloadTooLarge(DomainError):
    status = 413
    kind = "payload-too-large"
    title = "Payload too large"


class InternalError(DomainError):
    """An unhandled exception: still a bug, but answered as a problem."""

    status = 500
    kind = "internal-error"
    title = "Internal server error"

    def __init__(self) -> None:
        super().__init__("the server failed to handle this request; it has been logged")


# What a database refusal of a value means, worded for the client (never the server's text).
_DATA_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (asyncpg.exceptions.NumericValueOutOfRangeError, "a number is out of range"),
    (asyncpg.exceptions.DatetimeFieldOverflowError, "a date or time is out of range"),
    (asyncpg.exceptions.InvalidDatetimeFormatError, "a date or time is not valid"),
    (asyncpg.exceptions.InvalidTextRepresentationError, "a value has the wrong form"),
    (asyncpg.exceptions.CharacterNotInRepertoireError, "a text holds a character not allowed"),
    (asyncpg.exceptions.UntranslatableCharacterError, "a text holds a character not allowed"),
    (asyncpg.exceptions.StringDataRightTruncationError, "a text is too long"),
)


def data_error(exc: Exception) -> Invalid:
    """A value the database (or its driver) could not take, as a 422 on the request."""
    for kind, message in _DATA_ERRORS:
        if isinstance(exc, kind):
            return Invalid([("body", message)])
    return Invalid([("body", "a value cannot be stored")])


class FieldErrorOut(BaseModel):
    """One failing field of a validation problem."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    field: str
    """Dotted path of the field in the body, the query or the path (``items.0.quantity``)."""
    message: str
    """What is wrong with it."""


class ProblemDetails(BaseModel):
    """An error, as RFC 9457 problem+json; some problems carry one more member naming
    the thing in the way (``current_status``, ``charity_id``, ``project_id``)."""

    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "type": _TYPE_BASE + "validation-error",
                    "title": "Validation failed",
                    "status": 422,
                    "detail": "buyer_ref: Value error, must not contain a NUL character",
                    "instance": "/v1/orders",
                    "errors": [
                        {
                            "field": "buyer_ref",
                            "message": "Value error, must not contain a NUL character",
                        }
                    ],
                }
            ]
        },
    )

    type: str
    """``https://goodsforgood.dev/problems/`` and the problem's kind (``not-found``...)."""
    title: str
    """A short summary of the kind of problem."""
    status: int
    """The HTTP status code."""
    detail: str
    """What went wrong with this request."""
    instance: str | None = None
    """The request's path."""
    errors: list[FieldErrorOut] | None = None
    """Every failing field (validation problems only)."""


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of the problems a route or router can answer."""
    schema = {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
    return {
        status: {
            "model": ProblemDetails,
            "description": _STATUS_KIND.get(status, "error").replace("-", " ").capitalize(),
            "content": {PROBLEM_JSON: schema},
        }
        for status in statuses
    }


def problem_response(error: DomainError, instance: str | None = None) -> Response:
    return Response(
        orjson.dumps(error.body(instance)),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=error.headers,
    )


def _field_name(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_error(errors: Sequence[Any]) -> Invalid:
    """FastAPI's request validation errors as one ``Invalid``."""
    return Invalid(
        [(_field_name(err.get("loc", ())), str(err.get("msg", "invalid"))) for err in errors]
    )


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

# Told the route name of every request refused by validation (a service's metrics).
InvalidRequestObserver = Callable[[str], None]


def install_problem_handlers(
    app: FastAPI, *, on_invalid_request: InvalidRequestObserver | None = None
) -> None:
    """The one rendering of errors: domain errors, request validation, HTTP errors."""

    async def on_domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        return problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if on_invalid_request is not None:
            on_invalid_request(getattr(request.scope.get("route"), "name", "unknown"))
        return problem_response(validation_error(exc.errors()), request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _STATUS_KIND.get(exc.status_code, "error")
        title = kind.replace("-", " ").capitalize()
        problem = Problem(
            exc.status_code, kind, title, str(exc.detail), headers=dict(exc.headers or {})
        )
        return problem_response(problem, request.url.path)

    async def on_data_error(request: Request, exc: Exception) -> Response:
        # Validation should have refused the value: log it so the gap gets closed.
        log.warning("database refused a request value", path=request.url.path, error=repr(exc))
        return problem_response(data_error(exc), request.url.path)

    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    # The server's class 22 errors and the driver's refusal to encode an argument.
    app.add_exception_handler(asyncpg.exceptions.DataError, on_data_error)
    app.add_exception_handler(asyncpg.exceptions._base.DataError, on_data_error)
