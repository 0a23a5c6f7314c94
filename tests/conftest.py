"""Test-wide setup: a test namespace on the real servers, tokens, and helpers.

The suite runs against the real PostgreSQL and Kafka started by ``make test`` (or already
running from ``make run``). It never touches the ``make run`` data: databases get a
``_test`` suffix and topics a ``test.`` prefix.
"""

from __future__ import annotations

import os

os.environ.setdefault("GFG_JWT_SECRET", "test-secret-not-for-production-0123456789")
os.environ.setdefault("GFG_TOPIC_PREFIX", "test.")
os.environ.setdefault("GFG_ORDERS_DB", "orders_test")
os.environ.setdefault("GFG_DONATIONS_DB", "donations_test")
os.environ.setdefault("GFG_CHARITIES_DB", "charities_test")
os.environ.setdefault("GFG_LOG_JSON", "false")
os.environ.setdefault("GFG_LOG_LEVEL", "WARNING")
os.environ.setdefault("GFG_TRACES_DIR", "test-artifacts/traces")
os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_always_on")  # every test traced

from hypothesis import settings as _hypothesis_settings  # noqa: E402

# Speed is measured by the benchmarks, never by the tests: no per-example deadline, which
# a loaded shared machine exceeds (a correctness property failed once at 260 ms of 200).
_hypothesis_settings.register_profile("gfg", deadline=None)
_hypothesis_settings.load_profile("gfg")
if "GFG_DONATIONS_LOG_KEY" not in os.environ:  # a generated log key, no file written
    from shared.tlog.note import generate_key

    os.environ["GFG_DONATIONS_LOG_KEY"] = generate_key(
        os.environ.get("GFG_DONATIONS_LOG_ORIGIN", "goods-for-good/donations")
    )[0]
if "GFG_CHARITIES_LOG_KEY" not in os.environ:
    from shared.tlog.note import generate_key

    os.environ["GFG_CHARITIES_LOG_KEY"] = generate_key(
        os.environ.get("GFG_CHARITIES_LOG_ORIGIN", "goods-for-good/charities")
    )[0]

import uuid  # noqa: E402
from collections.abc import Iterable  # noqa: E402
from functools import cache  # noqa: E402

import pytest  # noqa: E402

from shared.auth import Role, issue_token  # noqa: E402
from shared.settings import CommonSettings  # noqa: E402


@pytest.fixture(scope="session")
def common_settings() -> CommonSettings:
    return CommonSettings()


@cache
def _token_settings() -> CommonSettings:
    return CommonSettings()


def bearer(role: Role | str, *sellers: str, charities: Iterable[str] = ()) -> dict[str, str]:
    """Authorization header for a token of ``role`` acting for ``sellers`` (or ``charities``)."""
    settings = _token_settings()
    token = issue_token(
        settings.hs256_secret(),
        role,
        sellers,
        charities=charities,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return bearer(Role.ADMIN)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.support import SUMMARY

    if SUMMARY:
        terminalreporter.section("goods-for-good run summary")
        for line in SUMMARY:
            terminalreporter.write_line(line)
