from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.auth import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_MAX_LIFETIME_S,
    Authenticator,
    Principal,
    Role,
    TokenPolicy,
    VerificationKeys,
    ensure_seller,
    issue_token,
    jwk_thumbprint,
    public_jwk,
)
from shared.problems import Problem
from shared.settings import CommonSettings

SECRET = "unit-test-secret-0123456789abcdef-0123"
T0 = 1_800_000_000.0  # the fake clock's start; any fixed instant does


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rejection(auth: Authenticator, header: str | None) -> str:
    """The 401's detail for ``header`` (fails the test if it is accepted)."""
    with pytest.raises(Problem) as raised:
        auth.principal(header)
    assert raised.value.status == 401
    assert raised.value.headers == {"WWW-Authenticate": "Bearer"}
    return raised.value.detail


def hs256(**kwargs: Any) -> Authenticator:
    return Authenticator(SECRET, clock=FakeClock(), **kwargs)


def token(role: Role = Role.ADMIN, *sellers: str, **kwargs: Any) -> str:
    kwargs.setdefault("now", T0)
    return "Bearer " + issue_token(kwargs.pop("key", SECRET), role, sellers, **kwargs)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "iat": int(T0),
        "exp": int(T0) + 3600,
        "role": "admin",
        "sellers": [],
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned() -> str:
    """An ``alg: none`` token: header and claims with an empty signature."""
    parts = ({"alg": "none", "typ": "JWT"}, claims())
    return "Bearer " + ".".join(b64url(json.dumps(part).encode()) for part in parts) + "."


@pytest.fixture(scope="module")
def issuer_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def pem_file(tmp_path: Path, issuer_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "issuer.pub.pem"
    path.write_bytes(
        issuer_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def write_jwks(path: Path, *keys: Ed25519PrivateKey) -> Path:
    path.write_text(json.dumps({"keys": [public_jwk(k.public_key()) for k in keys]}))
    return path


# --- principal and roles ----------------------------------------------------------------


def test_a_token_round_trips_role_and_sellers() -> None:
    principal = hs256().principal(token(Role.STOREFRONT, "s1", "s2"))
    assert principal.role is Role.STOREFRONT
    assert principal.sellers == frozenset({"s1", "s2"})
    assert principal.charities == frozenset()
    ensure_seller(principal, "s1")
    with pytest.raises(Problem) as raised:
        ensure_seller(principal, "s3")
    assert raised.value.status == 403


def test_a_charity_token_carries_its_charities() -> None:
    principal = hs256().principal(token(Role.CHARITY, charities=["c1", "c2"]))
    assert principal == Principal(Role.CHARITY, frozenset(), frozenset({"c1", "c2"}))
    assert principal.may_act_for_charity("c1")
    assert not principal.may_act_for_charity("c3")
    assert not principal.may_act_for("c1")


def test_admin_may_act_for_any_seller_and_charity() -> None:
    admin = hs256().principal(token(Role.ADMIN))
    ensure_seller(admin, "anyone")
    assert admin.may_act_for_charity("any-charity")


def test_a_seller_token_is_no_charity_token() -> None:
    seller = Principal(Role.SELLER, frozenset({"c1"}), frozenset({"c1"}))
    assert not seller.may_act_for_charity("c1")


# --- rejections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "missing Authorization: Bearer token"),
        ("", "missing Authorization: Bearer token"),
        ("Basic abc", "expected Authorization: Bearer <token>"),
        ("Bearer", "expected Authorization: Bearer <token>"),
        ("Bearer not-a-jwt", "malformed token"),
        ("Bearer a.b.c", "malformed token"),
    ],
)
def test_missing_or_malformed_headers_are_401(header: str | None, detail: str) -> None:
    assert rejection(hs256(), header) == detail


def test_a_token_signed_with_another_secret_is_401() -> None:
    header = token(key="another-secret-0123456789abcdef-0123456")
    assert rejection(hs256(), header) == "bad token signature"


def test_a_tampered_payload_is_401() -> None:
    header, payload, signature = token(Role.SELLER, "s1").split(".")
    forged = b64url(json.dumps(claims(role="admin")).encode())
    assert rejection(hs256(), f"{header}.{forged}.{signature}") == "bad token signature"


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"iss": "someone-else"}, f"wrong token issuer (this service accepts '{DEFAULT_ISSUER}')"),
        ({"aud": "other-app"}, f"wrong token audience (this service accepts '{DEFAULT_AUDIENCE}')"),
        ({"iss": None}, "token lacks the 'iss' claim"),
        ({"aud": None}, "token lacks the 'aud' claim"),
        ({"iat": None}, "token lacks the 'iat' claim"),
        ({"exp": None}, "token lacks the 'exp' claim"),
        ({"role": None}, "token lacks the 'role' claim"),
        ({"role": "superuser"}, "token has an unknown role"),
        ({"iat": "yesterday"}, "malformed token: claim 'iat' must be a number of seconds"),
        ({"exp": True}, "malformed token: claim 'exp' must be a number of seconds"),
        ({"exp": int(T0) - 1}, "malformed token: it expires before it was issued"),
        ({"sellers": "s1"}, "malformed token: claim 'sellers' must be a list of ids"),
        ({"charities": [1]}, "malformed token: claim 'charities' must be a list of ids"),
        ({"nbf": int(T0) + 3000}, "token not valid yet"),
    ],
)
def test_claims_are_checked_in_our_own_words(overrides: dict[str, Any], detail: str) -> None:
    forged = jwt.encode(claims(**overrides), SECRET, algorithm="HS256")
    assert rejection(hs256(), "Bearer " + forged) == detail


def test_issuer_and_audience_are_configurable() -> None:
    policy = TokenPolicy(issuer="gfg-prod", audience="gfg-api")
    auth = hs256(policy=policy)
    assert "wrong token issuer" in rejection(auth, token())
    accepted = token(issuer="gfg-prod", audience="gfg-api")
    assert auth.principal(accepted).role is Role.ADMIN
    assert "wrong token audience" in rejection(auth, token(issuer="gfg-prod"))


def test_an_audience_list_naming_this_service_is_accepted() -> None:
    forged = jwt.encode(claims(aud=["other", DEFAULT_AUDIENCE]), SECRET, algorithm="HS256")
    assert hs256().principal("Bearer " + forged).role is Role.ADMIN


def test_alg_none_is_401() -> None:
    assert "only algorithm accepted" in rejection(hs256(), unsigned())


def test_library_reasons_are_not_echoed() -> None:
    # PyJWT would say "Signature verification failed" / "Not enough segments" here.
    details = {
        rejection(hs256(), "Bearer " + raw)
        for raw in ["x.y", "x.y.z", "eyJhbGciOiJIUzI1NiJ9.e30.", token()[7:-2]]
    }
    assert details <= {"malformed token", "bad token signature"}


@given(raw=st.text(max_size=300))
def test_any_garbage_is_a_401_never_a_crash(raw: str) -> None:
    with pytest.raises(Problem) as raised:
        hs256().principal("Bearer " + raw)
    assert raised.value.status == 401


# --- time: expiry, cache, future iat, lifetime cap ---------------------------------------


def test_a_token_expires_exactly_at_exp() -> None:
    clock = FakeClock()
    header = token(ttl=timedelta(seconds=60))
    clock.now = T0 + 59.999
    assert Authenticator(SECRET, clock=clock).principal(header).role is Role.ADMIN
    clock.now = T0 + 60
    assert rejection(Authenticator(SECRET, clock=clock), header) == "token expired"


def test_a_remembered_token_still_expires_exactly_at_exp() -> None:
    clock = FakeClock()
    auth = Authenticator(SECRET, clock=clock)
    header = token(ttl=timedelta(seconds=60))
    first = auth.principal(header)
    clock.now = T0 + 59.999
    assert auth.principal(header) is first  # the same object: served from the cache
    clock.now = T0 + 60
    assert rejection(auth, header) == "token expired"
    clock.now = T0 + 30  # a clock that steps back does not revive the evicted entry's cache
    assert auth.principal(header) is not first


def test_a_token_issued_in_the_future_is_401_beyond_the_leeway() -> None:
    auth = hs256(policy=TokenPolicy(iat_leeway_s=30))
    assert auth.principal(token(now=T0 + 30)).role is Role.ADMIN
    assert rejection(auth, token(now=T0 + 31)) == "token issued in the future"


def test_a_ten_year_admin_token_is_401() -> None:
    header = token(ttl=timedelta(days=3653))
    assert rejection(hs256(), header) == "token lifetime too long (at most 86400 s)"


@given(
    ttl_s=st.integers(1, 3 * DEFAULT_MAX_LIFETIME_S),
    age_s=st.floats(-30, 3 * DEFAULT_MAX_LIFETIME_S, allow_nan=False),
)
def test_accepted_exactly_within_lifetime_cap_and_before_exp(ttl_s: int, age_s: float) -> None:
    clock = FakeClock(T0 + age_s)
    auth = Authenticator(SECRET, clock=clock)
    header = token(ttl=timedelta(seconds=ttl_s))
    if ttl_s > DEFAULT_MAX_LIFETIME_S:
        assert "lifetime too long" in rejection(auth, header)
    elif age_s >= ttl_s:
        assert rejection(auth, header) == "token expired"
    else:
        assert auth.principal(header).role is Role.ADMIN


def test_the_lifetime_cap_is_configurable() -> None:
    auth = hs256(policy=TokenPolicy(max_lifetime_s=600))
    assert auth.principal(token(ttl=timedelta(seconds=600))).role is Role.ADMIN
    assert "at most 600 s" in rejection(auth, token(ttl=timedelta(seconds=601)))


# --- EdDSA: an issuer-held key, services with the public key only ------------------------


def test_eddsa_happy_path_with_a_pem_file(pem_file: Path, issuer_key: Ed25519PrivateKey) -> None:
    auth = Authenticator(VerificationKeys.public_key_file(pem_file), clock=FakeClock())
    assert auth.algorithm == "EdDSA"
    principal = auth.principal(token(Role.SELLER, "s1", key=issuer_key))
    assert principal == Principal(Role.SELLER, frozenset({"s1"}))


def test_eddsa_happy_path_with_a_jwks_file(tmp_path: Path, issuer_key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    jwks = write_jwks(tmp_path / "jwks.json", other, issuer_key)
    auth = Authenticator(VerificationKeys.jwks_file(jwks), clock=FakeClock())
    assert auth.principal(token(Role.STOREFRONT, "s9", key=issuer_key)).sellers == {"s9"}
    assert auth.principal(token(key=other)).role is Role.ADMIN  # selected by its kid
    stranger = Ed25519PrivateKey.generate()
    assert "key this service does not know" in rejection(auth, token(key=stranger))


def test_a_one_key_jwks_verifies_tokens_without_kid(
    tmp_path: Path, issuer_key: Ed25519PrivateKey
) -> None:
    auth = Authenticator(
        VerificationKeys.jwks_file(write_jwks(tmp_path / "jwks.json", issuer_key)),
        clock=FakeClock(),
    )
    bare = jwt.encode(claims(), issuer_key, algorithm="EdDSA")
    assert auth.principal("Bearer " + bare).role is Role.ADMIN


def test_an_eddsa_token_from_another_key_is_401(pem_file: Path) -> None:
    auth = Authenticator(VerificationKeys.public_key_file(pem_file), clock=FakeClock())
    forged = token(key=Ed25519PrivateKey.generate())
    assert rejection(auth, forged) == "bad token signature"


def test_an_eddsa_verifier_rejects_hs256_tokens(pem_file: Path) -> None:
    auth = Authenticator(VerificationKeys.public_key_file(pem_file), clock=FakeClock())
    assert "only algorithm accepted" in rejection(auth, token(key=SECRET))
    assert "only algorithm accepted" in rejection(auth, unsigned())


def test_the_public_key_used_as_an_hmac_secret_is_401(pem_file: Path) -> None:
    # The classic key-confusion forgery: HS256 keyed with the (public) verification key.
    auth = Authenticator(VerificationKeys.public_key_file(pem_file), clock=FakeClock())
    signing_input = ".".join(
        b64url(json.dumps(part).encode()) for part in ({"alg": "HS256", "typ": "JWT"}, claims())
    )
    mac = hmac.new(pem_file.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
    assert "only algorithm accepted" in rejection(auth, f"Bearer {signing_input}.{b64url(mac)}")


def test_an_hs256_verifier_rejects_eddsa_tokens(issuer_key: Ed25519PrivateKey) -> None:
    assert "only algorithm accepted" in rejection(hs256(), token(key=issuer_key))


def test_services_refuse_private_key_material(
    tmp_path: Path, issuer_key: Ed25519PrivateKey
) -> None:
    private_pem = tmp_path / "issuer.pem"
    private_pem.write_bytes(
        issuer_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="private key"):
        VerificationKeys.public_key_file(private_pem)
    raw = issuer_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    private_jwk = {**public_jwk(issuer_key.public_key()), "d": b64url(raw)}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [private_jwk]}))
    with pytest.raises(ValueError, match="private key"):
        VerificationKeys.jwks_file(jwks)


def test_the_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    key = jwt.PyJWK.from_dict({"kty": "OKP", "crv": "Ed25519", "x": x}, algorithm="EdDSA").key
    assert jwk_thumbprint(key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


# --- settings ------------------------------------------------------------------------------


def test_settings_take_exactly_one_verification_key(
    monkeypatch: pytest.MonkeyPatch, pem_file: Path
) -> None:
    monkeypatch.delenv("GFG_JWT_SECRET", raising=False)
    with pytest.raises(ValidationError, match="exactly one"):
        CommonSettings()
    with pytest.raises(ValidationError, match="exactly one"):
        CommonSettings(jwt_secret=SECRET, jwt_public_key_file=pem_file)
    with pytest.raises(ValidationError, match="exactly one"):
        CommonSettings(jwt_public_key_file=pem_file, jwt_jwks_file=pem_file)


def test_settings_switch_a_service_to_eddsa(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, issuer_key: Ed25519PrivateKey
) -> None:
    monkeypatch.delenv("GFG_JWT_SECRET", raising=False)
    monkeypatch.setenv("GFG_JWT_JWKS_FILE", str(write_jwks(tmp_path / "j.json", issuer_key)))
    monkeypatch.setenv("GFG_JWT_ISSUER", "gfg-prod")
    monkeypatch.setenv("GFG_JWT_MAX_LIFETIME_S", "3600")
    settings = CommonSettings()
    auth = Authenticator.from_settings(settings, clock=FakeClock())
    assert auth.algorithm == "EdDSA"
    assert auth.principal(token(key=issuer_key, issuer="gfg-prod")).role is Role.ADMIN
    assert "at most 3600 s" in rejection(
        auth, token(key=issuer_key, issuer="gfg-prod", ttl=timedelta(hours=2))
    )
    with pytest.raises(ValueError, match="GFG_JWT_SECRET is not set"):
        settings.hs256_secret()
