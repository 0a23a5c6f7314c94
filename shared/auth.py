"""Bearer tokens: how they are issued and how every service verifies them on its own.

A token is a JWT with ``iss``, ``aud``, ``iat`` and ``exp`` plus the caller's ``role`` and
the ``sellers`` / ``charities`` it may act for. A deployment accepts exactly one algorithm:

- HS256 with the platform secret (the local default). Whoever verifies can also mint, so
  every service holding the secret is as powerful as the issuer.
- EdDSA (Ed25519) with an issuer-held private key. Services get only the public key (a PEM
  file or a JWKS file) and then reject every other algorithm, HS256 included, so a
  compromised service cannot mint tokens.

Lifetimes are capped (``exp - iat``), ``iat`` may not lie in the future beyond a small
leeway, and expiry is checked against an injected clock, also for tokens served from the
verified-token cache. Rejections are 401 problems worded here, never the JWT library's text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.responses import Response

from shared.problems import Problem

if TYPE_CHECKING:
    from shared.settings import CommonSettings

DEFAULT_ISSUER = "gfg-local"
DEFAULT_AUDIENCE = "goods-for-good"
DEFAULT_MAX_LIFETIME_S = 86_400
# Clock skew tolerated for ``iat`` between the issuer and a service; ``exp`` gets none, so a
# token stops working exactly at its expiry, cached or not.
DEFAULT_IAT_LEEWAY_S = 30

HS256 = "HS256"
EDDSA = "EdDSA"

Clock = Callable[[], float]


class Role(StrEnum):
    ADMIN = "admin"
    STOREFRONT = "storefront"
    SELLER = "seller"
    CHARITY = "charity"


@dataclass(frozen=True)
class Principal:
    role: Role
    sellers: frozenset[str]
    charities: frozenset[str] = frozenset()

    def may_act_for(self, seller_id: str) -> bool:
        return self.role is Role.ADMIN or seller_id in self.sellers

    def may_act_for_charity(self, charity_id: str) -> bool:
        return self.role is Role.ADMIN or (
            self.role is Role.CHARITY and charity_id in self.charities
        )


def issue_token(
    key: str | Ed25519PrivateKey,
    role: Role | str,
    sellers: Iterable[str] = (),
    *,
    charities: Iterable[str] = (),
    ttl: timedelta = timedelta(hours=1),
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    key_id: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token: HS256 for a secret, EdDSA for an Ed25519 private key.

    ``now`` (epoch seconds) backdates or postdates ``iat``; ``exp`` is ``iat + ttl``.
    An Ed25519 token carries ``kid`` (by default the key's RFC 7638 thumbprint) so a
    service holding a JWKS finds the key that verifies it.
    """
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + int(ttl.total_seconds()),
        "role": str(Role(role)),
        "sellers": sorted(set(sellers)),
    }
    charity_ids = sorted(set(charities))
    if charity_ids:
        claims["charities"] = charity_ids
    if isinstance(key, Ed25519PrivateKey):
        kid = key_id if key_id is not None else jwk_thumbprint(key.public_key())
        return jwt.encode(claims, key, algorithm=EDDSA, headers={"kid": kid})
    headers = {"kid": key_id} if key_id is not None else None
    return jwt.encode(claims, key, algorithm=HS256, headers=headers)


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Forbidden", detail)


# --- keys -----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The key as a JWK (RFC 8037), ``kid`` set to its thumbprint."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    return {**jwk, "kid": _thumbprint(jwk), "alg": EDDSA, "use": "sig"}


def jwk_thumbprint(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of the key's JWK."""
    return public_jwk(key)["kid"]


def _thumbprint(jwk: Mapping[str, str]) -> str:
    required = {name: jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The issuer's Ed25519 private key from a PEM file (PKCS#8, unencrypted)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class VerificationKeys:
    """The one algorithm a deployment accepts and the keys that verify it.

    ``keys`` maps a ``kid`` to its key; the key under ``None`` verifies tokens that name no
    ``kid`` (a single PEM key or a one-key JWKS).
    """

    algorithm: str
    keys: Mapping[str | None, str | Ed25519PublicKey] = field(repr=False)

    @cached_property
    def single(self) -> str | Ed25519PublicKey | None:
        """The key, when there is only one (then no need to read the token's header)."""
        distinct = {id(key): key for key in self.keys.values()}
        return next(iter(distinct.values())) if len(distinct) == 1 else None

    @classmethod
    def shared_secret(cls, secret: str) -> VerificationKeys:
        return cls(HS256, {None: secret})

    @classmethod
    def public_key(cls, key: Ed25519PublicKey) -> VerificationKeys:
        return cls(EDDSA, {None: key, jwk_thumbprint(key): key})

    @classmethod
    def public_key_file(cls, path: Path) -> VerificationKeys:
        """An Ed25519 public key in PEM; a private key here is refused, not used."""
        data = path.read_bytes()
        if b"PRIVATE KEY" in data:
            raise ValueError(f"{path}: holds a private key; services get only the public key")
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 public key")
        return cls.public_key(key)

    @classmethod
    def jwks_file(cls, path: Path) -> VerificationKeys:
        """The Ed25519 public keys of a JWKS file (RFC 7517), each under its ``kid``."""
        document = json.loads(path.read_text())
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: not a JWKS document with a non-empty 'keys' list")
        keys: dict[str | None, str | Ed25519PublicKey] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("kty") != "OKP":
                raise ValueError(f"{path}: every key must be an OKP (Ed25519) key")
            if "d" in entry:
                raise ValueError(f"{path}: holds a private key; services get only public keys")
            key = jwt.PyJWK.from_dict(entry, algorithm=EDDSA).key
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"{path}: every key must be an Ed25519 public key")
            kid = entry.get("kid")
            keys[kid if isinstance(kid, str) and kid else jwk_thumbprint(key)] = key
        if len(keys) == 1:
            keys[None] = next(iter(keys.values()))
        return cls(EDDSA, keys)


@dataclass(frozen=True)
class TokenPolicy:
    """What a verified token must also satisfy besides its signature."""

    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S
    iat_leeway_s: int = DEFAULT_IAT_LEEWAY_S


_REQUIRED_CLAIMS = ["iss", "aud", "iat", "exp", "role"]


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise unauthorized(f"malformed token: claim '{name}' must be a number of seconds")
    return float(value)


def _id_list(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    values = claims.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise unauthorized(f"malformed token: claim '{name}' must be a list of ids")
    return frozenset(values)


def _verify(
    token: str, keys: VerificationKeys, policy: TokenPolicy, now: float
) -> tuple[Principal, float]:
    """The principal and the token's expiry (epoch seconds), or a 401 in our own words."""
    key = keys.single
    if key is None:  # several keys: the header's kid picks one
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise unauthorized("malformed token") from exc
        key = keys.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise unauthorized("token is signed by a key this service does not know")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[keys.algorithm],
            issuer=policy.issuer,
            audience=policy.audience,
            # Time is checked below against the injected clock, not the library's.
            options={
                "require": _REQUIRED_CLAIMS,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidAlgorithmError as exc:  # alg=none and HS256-vs-EdDSA included
        raise unauthorized(
            f"token is not signed with {keys.algorithm}, the only algorithm accepted"
        ) from exc
    except jwt.InvalidSignatureError as exc:
        raise unauthorized("bad token signature") from exc
    except jwt.MissingRequiredClaimError as exc:
        missing = exc.claim if exc.claim in _REQUIRED_CLAIMS else "a required claim"
        raise unauthorized(f"token lacks the '{missing}' claim") from exc
    except jwt.InvalidIssuerError as exc:
        raise unauthorized(f"wrong token issuer (this service accepts '{policy.issuer}')") from exc
    except jwt.InvalidAudienceError as exc:
        raise unauthorized(
            f"wrong token audience (this service accepts '{policy.audience}')"
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise unauthorized("malformed token") from exc

    issued_at = _numeric_date(claims, "iat")
    expires = _numeric_date(claims, "exp")
    if issued_at > now + policy.iat_leeway_s:
        raise unauthorized("token issued in the future")
    if "nbf" in claims and _numeric_date(claims, "nbf") > now + policy.iat_leeway_s:
        raise unauthorized("token not valid yet")
    if expires <= issued_at:
        raise unauthorized("malformed token: it expires before it was issued")
    if expires - issued_at > policy.max_lifetime_s:
        raise unauthorized(f"token lifetime too long (at most {policy.max_lifetime_s} s)")
    if now >= expires:
        raise unauthorized("token expired")
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise unauthorized("token has an unknown role") from exc
    return Principal(role, _id_list(claims, "sellers"), _id_list(claims, "charities")), expires


class Authenticator:
    """Holds the verification keys; ``app.state.auth`` in every service."""

    # A storefront sends one token with thousands of requests: verifying its signature and
    # claims every time was an eighth of the orders service's CPU. Verified tokens are
    # remembered until they expire; a token never seen is verified in full.
    _CACHE_SIZE = 4096

    def __init__(
        self,
        keys: VerificationKeys | str,
        *,
        policy: TokenPolicy | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._keys = VerificationKeys.shared_secret(keys) if isinstance(keys, str) else keys
        self._policy = policy if policy is not None else TokenPolicy()
        self._clock = clock
        self._verified: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def from_settings(cls, settings: CommonSettings, *, clock: Clock = time.time) -> Authenticator:
        if settings.jwt_public_key_file is not None:
            keys = VerificationKeys.public_key_file(settings.jwt_public_key_file)
        elif settings.jwt_jwks_file is not None:
            keys = VerificationKeys.jwks_file(settings.jwt_jwks_file)
        else:
            if settings.jwt_secret is None:
                raise ValueError("no token verification key configured")
            keys = VerificationKeys.shared_secret(settings.jwt_secret.get_secret_value())
        policy = TokenPolicy(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            max_lifetime_s=settings.jwt_max_lifetime_s,
            iat_leeway_s=settings.jwt_iat_leeway_s,
        )
        return cls(keys, policy=policy, clock=clock)

    @property
    def algorithm(self) -> str:
        return self._keys.algorithm

    def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthorized("missing Authorization: Bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("expected Authorization: Bearer <token>")
        token = token.strip()
        now = self._clock()
        known = self._verified.get(token)
        if known is not None:
            if now < known[1]:
                return known[0]
            del self._verified[token]
        principal, expires = _verify(token, self._keys, self._policy, now)
        if len(self._verified) >= self._CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal


# Where ``AuthFirstRoute`` leaves the principal it verified, for the route's dependency.
_PRINCIPAL_KEY = "gfg.principal"


class RoleCheck:
    """The dependency ``require`` returns: a valid token whose role is allowed.

    Async although it never awaits: FastAPI runs a plain ``def`` dependency in a worker
    thread, which costs more per request than the token check itself.
    """

    def __init__(self, roles: Iterable[Role]) -> None:
        self.allowed = frozenset(roles)

    def check(self, request: Request) -> Principal:
        principal: Principal | None = request.scope.get(_PRINCIPAL_KEY)
        if principal is None:
            auth: Authenticator = request.app.state.auth
            principal = auth.principal(request.headers.get("authorization"))
        if principal.role not in self.allowed:
            names = ", ".join(sorted(self.allowed))
            raise forbidden(f"role {principal.role} may not do this (needs {names})")
        return principal

    async def __call__(self, request: Request) -> Principal:
        return self.check(request)


def require(*roles: Role) -> RoleCheck:
    """Dependency: a valid token whose role is one of ``roles`` (401 / 403 otherwise)."""
    return RoleCheck(roles)


def _role_checks(dependant: Dependant) -> list[RoleCheck]:
    found = [dependant.call] if isinstance(dependant.call, RoleCheck) else []
    for sub in dependant.dependencies:
        found.extend(_role_checks(sub))
    return found


class AuthFirstRoute(APIRoute):
    """A route that checks the caller's token before it reads the request body.

    FastAPI reads and parses a body before it resolves dependencies, so an unauthenticated
    client could make a service parse a megabyte of JSON. On a route with a body and a
    ``require`` dependency this checks the token (and role) first and leaves the principal
    in the request scope, where the dependency picks it up instead of verifying again.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = _role_checks(self.dependant) if self.body_field is not None else []
        if not checks:
            return handler

        async def authenticated_handler(request: Request) -> Response:
            principal = checks[0].check(request)
            for check in checks[1:]:
                check.check(request)
            request.scope[_PRINCIPAL_KEY] = principal
            return await handler(request)

        return authenticated_handler


def ensure_seller(principal: Principal, seller_id: str) -> None:
    if not principal.may_act_for(seller_id):
        raise forbidden(f"token may not act for seller {seller_id!r}")


AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
