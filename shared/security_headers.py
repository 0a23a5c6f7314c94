"""Security headers on every HTTP response of a service (added by ``shared.web.RequestLayer``).

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


def extra_headers(headers: Iterable[tuple[bytes, bytes]], docs: bool) -> Headers:
    """What to append to a response's headers: one pass over its (few) header names."""
    html = False
    for name, value in headers:
        if name == b"content-type":
            html = value.startswith(b"text/html")
        elif name == _CSP:  # the endpoint chose its own policy
            return _COMMON
    return _DOCS if docs else _PAGE if html else _API
