"""End to end on the running stack (``make run``): orders posted as completed → totals.

Every feature is on: the benchmark's project has a matching campaign (1:1, a budget that
never runs out), so each order also makes a match entry and its ``donation.recorded``;
the services run with their defaults (the return window, the donations log).

- ``pipeline.orders_per_s``: N completed orders posted through ``POST /v1/orders/batch``
  as fast as the API takes them; from the first request to the moment the project's
  total counts all N.
- ``pipeline.cpu_ms_per_order.<stage>`` and ``pipeline.cpu_ms_per_order``: the CPU each
  stage of the stack (orders, donations, charities, Kafka, PostgreSQL; ``tools.bench.cpu``)
  and this client used during the throughput phase, per order; the sum is the whole.
- ``pipeline.freshness_p50_ms`` / ``_p99_ms``: at a steady 2,000 orders/s (a batch of
  100 every 50 ms), the time from each batch's 2xx to the first totals read that
  includes it (polled every 10 ms with If-None-Match).

``GFG_BENCH_ORDERS_URL``, ``GFG_BENCH_DONATIONS_URL`` and ``GFG_BENCH_CHARITIES_URL`` point
it at services other than ``make run``'s. ``GFG_BENCH_PIPELINE_PARTS`` (comma-separated,
default ``throughput,freshness``) chooses the phases: ``freshness`` alone measures it on a
stack that no throughput phase has just loaded.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.auth import Role, issue_token
from tools.bench import Figure, cpu

ORDERS = os.environ.get("GFG_BENCH_ORDERS_URL", "http://127.0.0.1:8001")
DONATIONS = os.environ.get("GFG_BENCH_DONATIONS_URL", "http://127.0.0.1:8002")
CHARITIES = os.environ.get("GFG_BENCH_CHARITIES_URL", "http://127.0.0.1:8003")
DONATION_MINOR = 2  # the sellers' fixed rule; the campaign matches it 1:1
THROUGHPUT_ORDERS = 60_000
BATCH = 1000
STEADY_RATE = 2000
STEADY_SECONDS = 15
STEADY_BATCH = 100
SELLERS = 20
PARTS = os.environ.get("GFG_BENCH_PIPELINE_PARTS", "throughput,freshness").split(",")


def _headers(role: Role, sellers: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(os.environ['GFG_JWT_SECRET'], role, sellers)}"}


class Pipeline:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.run = uuid.uuid4().hex[:8]
        self.sellers = [f"bench-{self.run}-s{n}" for n in range(SELLERS)]
        self.storefront = _headers(Role.STOREFRONT, self.sellers)
        self.project_id = ""
        self.posted = 0
        self.stages: dict[str, list[int]] = {}
        self.cpu_before: dict[str, float] = {}
        self.cpu_ms: dict[str, float] = {}

    async def setup(self) -> None:
        admin = _headers(Role.ADMIN, [])
        charity = await self.client.post(
            f"{CHARITIES}/v1/charities", json={"name": f"Bench {self.run}"}, headers=admin
        )
        charity.raise_for_status()
        project = await self.client.post(
            f"{CHARITIES}/v1/charities/{charity.json()['charity_id']}/projects",
            json={"name": "Pipeline", "currency": "CNY"},
            headers=admin,
        )
        project.raise_for_status()
        self.project_id = project.json()["project_id"]
        for seller in self.sellers:
            rule = await self.client.put(
                f"{DONATIONS}/v1/sellers/{seller}/donation-rule",
                json={
                    "project_id": self.project_id,
                    "mode": "fixed",
                    "amount_minor": DONATION_MINOR,
                    "active": True,
                },
                headers=_headers(Role.SELLER, [seller]),
            )
            rule.raise_for_status()
        now = datetime.now(UTC)
        campaign = await self.client.post(
            f"{DONATIONS}/v1/campaigns",
            json={
                "campaign_id": f"bench-{self.run}",
                "sponsor": "Bench sponsor",
                "project_id": self.project_id,
                "ratio_bp": 10_000,
                "budget_minor": 10**12,
                "starts_at": (now - timedelta(minutes=1)).isoformat(),
                "ends_at": (now + timedelta(days=1)).isoformat(),
            },
            headers=admin,
        )
        campaign.raise_for_status()

    def orders(self, count: int) -> list[dict[str, Any]]:
        now = datetime.now(UTC).isoformat()
        out = []
        for _ in range(count):
            n = self.posted
            self.posted += 1
            out.append(
                {
                    "order_id": f"bench-{self.run}-{n}",
                    "seller_id": self.sellers[n % SELLERS],
                    "currency": "CNY",
                    "total_minor": 5900,
                    "items": [{"item_id": "tea", "quantity": 2, "unit_price_minor": 2950}],
                    "placed_at": now,
                    "status": "completed",
                    "completed_at": now,
                }
            )
        return out

    async def post_batch(self, orders: list[dict[str, Any]]) -> None:
        response = await self.client.post(
            f"{ORDERS}/v1/orders/batch", json={"orders": orders}, headers=self.storefront
        )
        if response.status_code != 200:
            raise RuntimeError(f"batch -> {response.status_code}: {response.text[:300]}")

    async def matched_minor(self) -> int:
        response = await self.client.get(f"{CHARITIES}/v1/projects/{self.project_id}/totals")
        response.raise_for_status()
        return int(response.json()["matched_minor"])

    async def donation_count(self, etag: str | None = None) -> tuple[int | None, str | None]:
        headers = {"If-None-Match": etag} if etag else {}
        response = await self.client.get(
            f"{CHARITIES}/v1/projects/{self.project_id}/totals", headers=headers
        )
        if response.status_code == 304:
            return None, etag
        response.raise_for_status()
        return int(response.json()["donation_count"]), response.headers.get("etag")

    async def throughput(self) -> float:
        batches = [self.orders(BATCH) for _ in range(THROUGHPUT_ORDERS // BATCH)]
        target = self.posted
        self.stages = cpu.stage_processes()
        self.stages["bench_client"] = [os.getpid()]
        self.cpu_before = cpu.sample(self.stages)
        started = time.perf_counter()
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)

        async def poster() -> None:
            while not queue.empty():
                await self.post_batch(queue.get_nowait())

        await asyncio.gather(*(poster() for _ in range(4)))
        deadline = time.monotonic() + 600
        while (await self.donation_count())[0] != target:
            if time.monotonic() > deadline:
                raise TimeoutError("the pipeline did not drain within 600 s")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        # every order was matched (its match may be folded a batch after its accrual)
        deadline = time.monotonic() + 30
        while (matched := await self.matched_minor()) != target * DONATION_MINOR:
            if time.monotonic() > deadline:
                raise AssertionError(f"matched {matched}, expected {target * DONATION_MINOR}")
            await asyncio.sleep(0.05)
        self.cpu_ms = cpu.per_item_ms(self.cpu_before, cpu.sample(self.stages), THROUGHPUT_ORDERS)
        return THROUGHPUT_ORDERS / elapsed

    async def freshness(self) -> list[float]:
        acked: list[tuple[int, float]] = []  # (cumulative count, time of 2xx)
        seen: list[float] = []
        done = asyncio.Event()

        async def produce() -> None:
            interval = STEADY_BATCH / STEADY_RATE
            start = time.perf_counter()
            for i in range(STEADY_RATE * STEADY_SECONDS // STEADY_BATCH):
                await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
                batch = self.orders(STEADY_BATCH)
                target = self.posted
                await self.post_batch(batch)
                acked.append((target, time.perf_counter()))
            done.set()

        async def watch() -> None:
            etag: str | None = None
            count = 0
            while not (done.is_set() and len(seen) == len(acked)):
                fresh, etag = await self.donation_count(etag)
                now = time.perf_counter()
                if fresh is not None:
                    count = fresh
                while len(seen) < len(acked) and acked[len(seen)][0] <= count:
                    seen.append(now - acked[len(seen)][1])
                await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(produce(), watch()), timeout=STEADY_SECONDS + 120)
        return seen


async def run() -> list[Figure]:
    figures: list[Figure] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=16)) as client:
        pipeline = Pipeline(client)
        await pipeline.setup()
        if "throughput" in PARTS:
            per_s = await pipeline.throughput()
            figures.append(Figure("pipeline.orders_per_s", per_s, "orders/s"))
            figures += [
                Figure(f"pipeline.cpu_ms_per_order.{stage}", ms, "ms")
                for stage, ms in sorted(pipeline.cpu_ms.items())
            ]
            figures.append(Figure("pipeline.cpu_ms_per_order", sum(pipeline.cpu_ms.values()), "ms"))
        if "freshness" in PARTS:
            fresh = sorted(await pipeline.freshness())
            p99 = fresh[min(len(fresh) - 1, int(len(fresh) * 0.99))]
            figures.append(
                Figure("pipeline.freshness_p50_ms", statistics.median(fresh) * 1000, "ms")
            )
            figures.append(Figure("pipeline.freshness_p99_ms", p99 * 1000, "ms"))
    return figures
