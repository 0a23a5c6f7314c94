"""Token policy through a real service: EdDSA pinning, the lifetime cap, problem details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.charities.app import create_app
from services.charities.config import Settings
from shared.auth import Role, issue_token
from tests.conftest import bearer, unique


@pytest.fixture(scope="module")
def issuer_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def public_pem(issuer_key: Ed25519PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("issuer") / "jwt-issuer.pub.pem"
    path.write_bytes(
        issuer_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.fixture(scope="module")
async def eddsa_client(public_pem: Path) -> AsyncIterator[httpx.AsyncClient]:
    # The service holds the public key only: the environment's secret is overridden away.
    settings = Settings(
        jwt_secret=None, jwt_public_key_file=public_pem, charities_consume_ledger=False
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://charities") as client:
            yield client


def _unauthorized(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == "Bearer"
    assert detail in response.json()["detail"]


async def test_an_eddsa_service_accepts_issuer_tokens_and_refuses_hs256(
    eddsa_client: httpx.AsyncClient, issuer_key: Ed25519PrivateKey
) -> None:
    body = {"name": unique("Charity")}
    eddsa_admin = {"Authorization": f"Bearer {issue_token(issuer_key, Role.ADMIN)}"}
    created = await eddsa_client.post("/v1/charities", json=body, headers=eddsa_admin)
    assert created.status_code == 201, created.text

    refused = await eddsa_client.post("/v1/charities", json=body, headers=bearer(Role.ADMIN))
    _unauthorized(refused, "only algorithm accepted")

    ten_years = issue_token(issuer_key, Role.ADMIN, ttl=timedelta(days=3653))
    refused = await eddsa_client.post(
        "/v1/charities", json=body, headers={"Authorization": f"Bearer {ten_years}"}
    )
    _unauthorized(refused, "token lifetime too long")


async def test_the_default_service_refuses_foreign_and_overlong_tokens(
    client: httpx.AsyncClient, issuer_key: Ed25519PrivateKey
) -> None:
    body = {"name": unique("Charity")}
    eddsa = issue_token(issuer_key, Role.ADMIN)
    refused = await client.post(
        "/v1/charities", json=body, headers={"Authorization": f"Bearer {eddsa}"}
    )
    _unauthorized(refused, "only algorithm accepted")

    wrong_audience = issue_token(Settings().hs256_secret(), Role.ADMIN, audience="another-platform")
    refused = await client.post(
        "/v1/charities", json=body, headers={"Authorization": f"Bearer {wrong_audience}"}
    )
    _unauthorized(refused, "wrong token audience")
