"""Security headers on every HTTP response of a service, as a pure ASGI middleware.

Every response gets ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and a Content-Security-Policy chosen once per response:

- an HTML page (``Content-Type: text/html``) may load scripts, styles, images and data
  from its own origin only, and nothing inline;
- anything else (JSON, problem+json, static files) may load nothing at all;
- FastAPI's ``/docs`` and ``/redoc`` pages load Swagger UI / ReDoc from a CDN and run an
  inline script, so their CSP only forbids framing.

It sits on the hot path of every request, so the header lists are built once at import
and a response costs one set lookup on the path and a scan of its few header names.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = "frame-ancestors 'none'"
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

_CSP = b"content-security-policy"
_COMMON: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def _with_csp(policy: str) -> Headers:
    return [*_COMMON, (_CSP, policy.encode("latin-1"))]


_PAGE = _with_csp(PAGE_CSP)
_API = _with_csp(API_CSP)
_DOCS = _with_csp(DOCS_CSP)


def _extra(headers: Iterable[tuple[bytes, bytes]], docs: bool) -> Headers:
    """What to append to a response's headers: one pass over its (few) header names."""
    html = False
    for name, value in headers:
        if name == b"content-type":
            html = value.startswith(b"text/html")
        elif name == _CSP:  # the endpoint chose its own policy
            return _COMMON
    return _DOCS if docs else _PAGE if html else _API


class SecurityHeaders:
    """Adds the headers above to each ``http.response.start`` unless the app set them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: Headers = message.get("headers", [])
                message = {**message, "headers": [*headers, *_extra(headers, docs)]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
