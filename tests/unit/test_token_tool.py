from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

import pytest

from shared.auth import Authenticator, Role, VerificationKeys
from shared.problems import Problem
from tools import token as token_tool

SECRET = "unit-test-secret-0123456789abcdef-0123"


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["tools.token", *args])
    return token_tool.main()


def test_keygen_then_mint_an_eddsa_token_a_jwks_service_accepts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, "--keygen", str(tmp_path)) == 0
    private = tmp_path / "jwt-issuer.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert run(monkeypatch, "--keygen", str(tmp_path)) == 2  # never overwrites a key
    capsys.readouterr()

    monkeypatch.delenv("GFG_JWT_SECRET", raising=False)
    monkeypatch.setenv("GFG_JWT_PRIVATE_KEY_FILE", str(private))
    assert run(monkeypatch, "--role", "charity", "--charities", "c1,c2", "--hours", "24") == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1  # the token alone on stdout
    for keys in (
        VerificationKeys.jwks_file(tmp_path / "jwt-jwks.json"),
        VerificationKeys.public_key_file(tmp_path / "jwt-issuer.pub.pem"),
    ):
        principal = Authenticator(keys).principal("Bearer " + printed.strip())
        assert principal.role is Role.CHARITY
        assert principal.charities == {"c1", "c2"}
    expired_later = Authenticator(
        VerificationKeys.jwks_file(tmp_path / "jwt-jwks.json"),
        clock=lambda: time.time() + 24 * 3600 + 60,
    )
    with pytest.raises(Problem, match="token expired"):
        expired_later.principal("Bearer " + printed.strip())


@pytest.mark.parametrize(
    "args",
    [
        ["--role", "admin", "--hours", "25"],
        ["--role", "admin", "--hours", "0"],
        ["--role", "seller"],
        ["--role", "charity"],
        ["--role", "admin", "--charities", "c1"],
    ],
)
def test_out_of_bounds_requests_print_no_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    monkeypatch.setenv("GFG_JWT_SECRET", SECRET)
    assert run(monkeypatch, *args) == 2
    assert capsys.readouterr().out == ""


def test_an_hs256_token_lasts_one_hour_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GFG_JWT_SECRET", SECRET)
    monkeypatch.delenv("GFG_JWT_PRIVATE_KEY_FILE", raising=False)
    assert run(monkeypatch, "--role", "storefront", "--sellers", "s1") == 0
    header = "Bearer " + capsys.readouterr().out.strip()
    assert Authenticator(SECRET).principal(header).sellers == {"s1"}
    in_an_hour = Authenticator(SECRET, clock=lambda: time.time() + 3601)
    with pytest.raises(Problem, match="token expired"):
        in_an_hour.principal(header)
