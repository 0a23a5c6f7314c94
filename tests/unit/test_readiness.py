"""/readyz: checks cached for a second, only the failed dependencies' names answered."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from shared.observability import ReadinessProbe, health_router


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_checks_run_once_per_ttl() -> None:
    clock = FakeClock()
    probe = ReadinessProbe(ttl_s=1.0, clock=clock)
    calls = {"postgres": 0}

    async def postgres() -> None:
        calls["postgres"] += 1

    for _ in range(5):
        assert await probe.failed({"postgres": postgres}) == []
    assert calls["postgres"] == 1
    clock.now += 0.9
    await probe.failed({"postgres": postgres})
    assert calls["postgres"] == 1
    clock.now += 0.2
    await probe.failed({"postgres": postgres})
    assert calls["postgres"] == 2


async def test_readyz_names_the_failed_dependency_and_nothing_else() -> None:
    clock = FakeClock()
    probe = ReadinessProbe(ttl_s=1.0, clock=clock)
    app = FastAPI()
    app.include_router(health_router(probe))
    secret = "password=hunter2 host=10.9.8.7:5432"

    async def postgres() -> None:
        raise ConnectionRefusedError(secret)

    async def kafka() -> None:
        return None

    app.state.readiness = {"postgres": postgres, "kafka": kafka}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json() == {"status": "unavailable", "failed": ["postgres"]}
        for leak in ("hunter2", "10.9.8.7", "ConnectionRefused"):
            assert leak not in down.text
        again = await client.get("/readyz")
        assert again.status_code == 503
        assert probe.runs == 1

        async def recovered() -> None:
            return None

        app.state.readiness["postgres"] = recovered
        clock.now += 1.0
        up = await client.get("/readyz")
        assert up.status_code == 200
        assert up.json() == {"status": "ready", "checks": ["kafka", "postgres"]}
        assert probe.runs == 2
