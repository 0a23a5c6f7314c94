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

import asyncio  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
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


# Topics a test names with ``unique`` (``<prefix><name>-<12 hex>`` and what follows):
# never reused by a later run, so deleted when the session ends. Left behind, they
# pile up: after a few dozen runs the broker loads thousands of partition folders at
# every start (about 90 s for 4,800).
def _one_run_topic(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{12}(?:\.|$)")


async def _delete_one_run_topics(settings: CommonSettings) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    from shared.kafka import client_options

    admin = AIOKafkaAdminClient(
        **client_options(settings.kafka_bootstrap), request_timeout_ms=15_000
    )
    await admin.start()
    try:
        pattern = _one_run_topic(settings.topic_prefix)
        doomed = [t for t in await admin.list_topics() if pattern.match(t)]
        for start in range(0, len(doomed), 100):
            await admin.delete_topics(doomed[start : start + 100])
        return len(doomed)
    finally:
        await admin.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Deletes this namespace's one-run topics, when the broker is there to ask."""
    from tests.support import SUMMARY

    settings = CommonSettings()
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return  # no broker (a unit-only run): nothing was created
    try:
        deleted = asyncio.run(_delete_one_run_topics(settings))
    except Exception as exc:  # a cleanup: say so, never fail the run for it
        SUMMARY.append(f"could not delete this run's test topics: {type(exc).__name__}: {exc}")
        return
    if deleted:
        SUMMARY.append(f"deleted {deleted} one-run test topics ({settings.topic_prefix}...)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.support import SUMMARY

    if SUMMARY:
        terminalreporter.section("goods-for-good run summary")
        for line in SUMMARY:
            terminalreporter.write_line(line)
