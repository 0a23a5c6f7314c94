"""JWT bearer auth verified locally by every service (HS256 with the platform secret)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from shared.problems import Problem


class Role(StrEnum):
    ADMIN = "admin"
    STOREFRONT = "storefront"
    SELLER = "seller"


@dataclass(frozen=True)
class Principal:
    role: Role
    sellers: frozenset[str]

    def may_act_for(self, seller_id: str) -> bool:
        return self.role is Role.ADMIN or seller_id in self.sellers


def issue_token(
    secret: str,
    role: Role | str,
    sellers: Iterable[str] = (),
    *,
    ttl: timedelta = timedelta(hours=12),
    algorithm: str = "HS256",
) -> str:
    claims = {
        "role": str(Role(role)),
        "sellers": sorted(set(sellers)),
        "exp": datetime.now(UTC) + ttl,
    }
    return jwt.encode(claims, secret, algorithm=algorithm)


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Forbidden", detail)


def _decode(token: str, secret: str, algorithm: str) -> tuple[Principal, float]:
    """The principal and the token's expiry (epoch seconds)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[algorithm], options={"require": ["exp", "role"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise unauthorized(f"invalid token: {exc}") from exc
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise unauthorized(f"unknown role {claims['role']!r}") from exc
    sellers = claims.get("sellers", [])
    if not isinstance(sellers, list) or not all(isinstance(s, str) for s in sellers):
        raise unauthorized("claim 'sellers' must be a list of seller ids")
    return Principal(role, frozenset(sellers)), float(claims["exp"])


class Authenticator:
    """Holds the verification key; ``app.state.auth`` in every service."""

    # A storefront sends one token with thousands of requests: verifying its signature and
    # claims every time was an eighth of the orders service's CPU. Verified tokens are
    # remembered until they expire; a token never seen is verified in full.
    _CACHE_SIZE = 4096

    def __init__(self, secret: str, algorithm: str = "HS256") -> None:
        self._secret = secret
        self._algorithm = algorithm
        self._verified: dict[str, tuple[Principal, float]] = {}

    def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthorized("missing Authorization: Bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("expected Authorization: Bearer <token>")
        token = token.strip()
        known = self._verified.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        principal, expires = _decode(token, self._secret, self._algorithm)
        if len(self._verified) >= self._CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """Dependency: a valid token whose role is one of ``roles`` (401 / 403 otherwise)."""

    allowed = frozenset(roles)

    # async although it never awaits: FastAPI runs a plain ``def`` dependency in a worker
    # thread, which costs more per request than the token check itself.
    async def dependency(request: Request) -> Principal:
        auth: Authenticator = request.app.state.auth
        principal = auth.principal(request.headers.get("authorization"))
        if principal.role not in allowed:
            names = ", ".join(sorted(allowed))
            raise forbidden(f"role {principal.role} may not do this (needs {names})")
        return principal

    return dependency


def ensure_seller(principal: Principal, seller_id: str) -> None:
    if not principal.may_act_for(seller_id):
        raise forbidden(f"token may not act for seller {seller_id!r}")


AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
