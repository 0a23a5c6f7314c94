from __future__ import annotations

import time
from datetime import timedelta

import pytest

from shared.auth import Authenticator, Role, ensure_seller, issue_token
from shared.problems import Problem

SECRET = "unit-test-secret-0123456789abcdef-0123"


def test_a_token_round_trips_role_and_sellers() -> None:
    principal = Authenticator(SECRET).principal(
        "Bearer " + issue_token(SECRET, Role.STOREFRONT, ["s1", "s2"])
    )
    assert principal.role is Role.STOREFRONT
    assert principal.sellers == frozenset({"s1", "s2"})
    ensure_seller(principal, "s1")
    with pytest.raises(Problem) as raised:
        ensure_seller(principal, "s3")
    assert raised.value.status == 403


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic abc",
        "Bearer",
        "Bearer not-a-jwt",
        "Bearer " + issue_token("another-secret-0123456789abcdef-0123456", Role.ADMIN),
        "Bearer " + issue_token(SECRET, Role.ADMIN, ttl=timedelta(seconds=-5)),
    ],
)
def test_missing_malformed_foreign_or_expired_tokens_are_401(header: str | None) -> None:
    with pytest.raises(Problem) as raised:
        Authenticator(SECRET).principal(header)
    assert raised.value.status == 401


def test_admin_may_act_for_any_seller() -> None:
    admin = Authenticator(SECRET).principal("Bearer " + issue_token(SECRET, Role.ADMIN))
    ensure_seller(admin, "anyone")


def test_a_remembered_token_still_expires() -> None:
    auth = Authenticator(SECRET)
    header = "Bearer " + issue_token(SECRET, Role.ADMIN, ttl=timedelta(seconds=1))
    assert auth.principal(header).role is Role.ADMIN
    assert auth.principal(header).role is Role.ADMIN  # from the cache
    time.sleep(2.1)  # exp has second resolution
    with pytest.raises(Problem) as raised:
        auth.principal(header)
    assert raised.value.status == 401
