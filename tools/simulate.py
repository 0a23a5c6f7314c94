"""``make simulate``: a marketplace streaming orders through the orders API.

Creates charities and projects, gives sellers a mix of fixed and percent rules (some change
their rule or pause mid-run), streams orders (completed, placed-then-completed, cancelled,
fully and partly refunded, currency mismatches, duplicate retries, and a share of 1-10 fen
orders, below many fixed rules, so the cap at the order total is exercised) at a rate or
as fast as possible, and finally compares the project totals the charities service reports
with the totals computed here, independently, from what was posted. Exit status 1 on any
difference.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import httpx
from tqdm import tqdm

from shared.auth import Role, issue_token


@dataclass
class RuleVersion:
    effective_from: datetime
    project_id: str
    mode: str
    amount_minor: int = 0
    basis_points: int = 0
    min_minor: int | None = None
    max_minor: int | None = None
    active: bool = True


@dataclass
class OrderPlan:
    order_id: str
    seller_id: str
    currency: str
    total_minor: int
    placed_at: datetime
    completed: bool = False
    refunded_totals: list[int] = field(default_factory=list)  # cumulative, one per refund

    @property
    def refunded_minor(self) -> int:
        return self.refunded_totals[-1] if self.refunded_totals else 0


@dataclass
class Tally:
    """Expected project totals, computed from the posted facts with exact fractions."""

    net: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    donations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    capped: int = 0  # orders whose accrual the order's total capped


def rule_at(history: Sequence[RuleVersion], placed_at: datetime) -> RuleVersion | None:
    """The version in effect at ``placed_at``; ``history`` is oldest version first, and of
    two versions with the same ``effective_from`` the later one replaced the earlier."""
    in_effect = None
    for rule in history:
        if rule.effective_from <= placed_at and (
            in_effect is None or rule.effective_from >= in_effect.effective_from
        ):
            in_effect = rule
    return in_effect


def rule_amount(rule: RuleVersion, base_minor: int) -> int:
    """The rule applied to ``base_minor``, before any cap at an order total.

    ``fixed``: ``amount_minor``. ``percent``: ``basis_points`` of the base as an exact
    ``Fraction``, rounded half up to the minor unit, then clamped to ``[min_minor,
    max_minor]`` where given. Written from the contract, not from the service's code.
    """
    if rule.mode == "fixed":
        return rule.amount_minor
    exact = Fraction(base_minor * rule.basis_points, 10_000)
    amount = math.floor(exact + Fraction(1, 2))
    if rule.min_minor is not None:
        amount = max(amount, rule.min_minor)
    if rule.max_minor is not None:
        amount = min(amount, rule.max_minor)
    return amount


def donation_for(rule: RuleVersion, total_minor: int) -> int:
    """The accrual of a completed order: the rule's amount capped at the order's total.

    The cap applies here, when the accrual is made (a fixed 31 on an order of 4 gives 4).
    """
    return max(0, min(rule_amount(rule, total_minor), total_minor))


def net_after_refunds(rule: RuleVersion, total_minor: int, refunded_totals: Sequence[int]) -> int:
    """An order's net donation after its accrual and then each refund, in order.

    ``refunded_totals`` are the order's cumulative refunded totals, one per refund. A
    ``percent`` rule's net becomes the rule applied to ``total_minor - refunded_total``,
    with no second cap at that remainder; the difference is one reversal, which is never
    negative (a refund never adds to a donation). A ``fixed`` rule reverses the whole
    accrual on a full refund and nothing otherwise. The net never goes below 0.
    """
    net = donation_for(rule, total_minor)
    for refunded_total in refunded_totals:
        if net <= 0:
            break
        if rule.mode == "fixed":
            target = 0 if refunded_total >= total_minor else net
        else:
            target = rule_amount(rule, max(0, total_minor - refunded_total))
        net -= max(0, net - max(0, target))
    return net


def expected_net(order: OrderPlan, rule: RuleVersion | None, project_currency: str) -> int:
    """The net donation the contract gives ``order`` under ``rule`` (the version in effect at
    ``placed_at``): nothing without a rule, for an inactive one, or in another currency."""
    if not order.completed or rule is None or not rule.active:
        return 0
    if order.currency != project_currency:
        return 0
    return net_after_refunds(rule, order.total_minor, order.refunded_totals)


class Simulation:
    def __init__(self, args: argparse.Namespace, secret: str) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.secret = secret
        self.run_id = uuid.uuid4().hex[:8]
        self.admin = self._auth(Role.ADMIN, [])
        self.projects: dict[str, str] = {}  # project_id -> currency
        self.sellers: list[str] = []
        self.rules: dict[str, list[RuleVersion]] = defaultdict(list)
        self.orders: dict[str, OrderPlan] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.client = httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=args.concurrency * 2)
        )

    def _auth(self, role: Role, sellers: list[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.secret, role, sellers)}"}

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(60):  # services may be restarting under the chaos test
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TransportError:
                self.counts["retries_transport"] += 1
                await asyncio.sleep(min(0.1 * (attempt + 1), 2.0))
                continue
            if response.status_code >= 500:
                self.counts["retries_5xx"] += 1
                await asyncio.sleep(min(0.1 * (attempt + 1), 2.0))
                continue
            return response
        raise RuntimeError(f"{method} {url}: no answer after 60 attempts")

    async def _ok(self, method: str, url: str, expect: tuple[int, ...], **kw: Any) -> Any:
        response = await self._call(method, url, **kw)
        if response.status_code not in expect:
            raise RuntimeError(f"{method} {url} -> {response.status_code}: {response.text}")
        return response.json()

    async def setup(self) -> None:
        a = self.args
        for c in range(a.charities):
            charity = await self._ok(
                "POST",
                f"{a.charities_url}/v1/charities",
                (201,),
                json={"name": f"Charity {c} ({self.run_id})"},
                headers=self.admin,
            )
            for p in range(a.projects_per_charity):
                project = await self._ok(
                    "POST",
                    f"{a.charities_url}/v1/charities/{charity['charity_id']}/projects",
                    (201,),
                    json={"name": f"Project {c}.{p}", "currency": "CNY", "goal_minor": 10**7},
                    headers=self.admin,
                )
                self.projects[project["project_id"]] = project["currency"]
        self.sellers = [f"sim-{self.run_id}-s{n}" for n in range(a.sellers)]
        for seller in self.sellers:
            await self.set_rule(seller, self._random_rule())

    def _random_rule(self) -> dict[str, Any]:
        project_id = self.rng.choice(sorted(self.projects))
        if self.rng.random() < 0.5:
            return {
                "project_id": project_id,
                "mode": "fixed",
                "amount_minor": self.rng.randint(1, 50),
            }
        rule: dict[str, Any] = {
            "project_id": project_id,
            "mode": "percent",
            "basis_points": self.rng.randint(10, 500),
        }
        if self.rng.random() < 0.3:
            rule["min_minor"] = self.rng.randint(0, 5)
        if self.rng.random() < 0.3:
            rule["max_minor"] = self.rng.randint(20, 200)
        return rule

    async def set_rule(self, seller: str, rule: dict[str, Any], active: bool = True) -> None:
        body = await self._ok(
            "PUT",
            f"{self.args.donations_url}/v1/sellers/{seller}/donation-rule",
            (200,),
            json={**rule, "active": active},
            headers=self._auth(Role.SELLER, [seller]),
        )
        self.rules[seller].append(
            RuleVersion(
                effective_from=datetime.fromisoformat(body["effective_from"]),
                project_id=body["project_id"],
                mode=body["mode"],
                amount_minor=body.get("amount_minor") or 0,
                basis_points=body.get("basis_points") or 0,
                min_minor=body.get("min_minor"),
                max_minor=body.get("max_minor"),
                active=body["active"],
            )
        )
        self.counts["rule_changes"] += 1

    async def one_order(self, n: int) -> None:
        a, rng = self.args, self.rng
        seller = rng.choice(self.sellers)
        headers = self._auth(Role.STOREFRONT, [seller])
        order_id = f"sim-{self.run_id}-{n}"
        if rng.random() < a.small_order_share:  # 1-10 fen: fixed rules above the total occur
            quantity, price = 1, rng.randint(1, 10)
            self.counts["small_orders"] += 1
        else:
            quantity, price = rng.randint(1, 5), rng.randint(1, 50_000)
        currency = "USD" if rng.random() < 0.02 else "CNY"
        plan = OrderPlan(order_id, seller, currency, quantity * price, datetime.now(UTC))
        body: dict[str, Any] = {
            "order_id": order_id,
            "seller_id": seller,
            "currency": currency,
            "total_minor": plan.total_minor,
            "items": [{"item_id": "sku", "quantity": quantity, "unit_price_minor": price}],
            "placed_at": plan.placed_at.isoformat(),
        }
        roll = rng.random()
        orders_url = f"{a.orders_url}/v1/orders"
        self.orders[order_id] = plan
        if roll < 0.6:  # posted as completed in one call
            body |= {"status": "completed", "completed_at": datetime.now(UTC).isoformat()}
            await self._ok("POST", orders_url, (200, 201), json=body, headers=headers)
            plan.completed = True
        else:
            await self._ok("POST", orders_url, (200, 201), json=body, headers=headers)
            if roll < 0.9:
                await self._ok("POST", f"{orders_url}/{order_id}/complete", (200,), headers=headers)
                plan.completed = True
            else:
                await self._ok("POST", f"{orders_url}/{order_id}/cancel", (200,), headers=headers)
                self.counts["cancelled"] += 1
        if rng.random() < 0.05:  # a storefront retrying the same POST
            await self._ok("POST", orders_url, (200,), json=body, headers=headers)
            self.counts["duplicates"] += 1
        if plan.completed and rng.random() < 0.1:
            full = rng.random() < 0.4
            amount = plan.total_minor if full else rng.randint(1, plan.total_minor)
            refund = {"refund_id": f"{order_id}-r1", "amount_minor": amount}
            url = f"{orders_url}/{order_id}/refunds"
            await self._ok("POST", url, (200, 201), json=refund, headers=headers)
            plan.refunded_totals.append(plan.refunded_minor + amount)
            self.counts["refunds_full" if full else "refunds_partial"] += 1
            if rng.random() < 0.3:
                await self._ok("POST", url, (200,), json=refund, headers=headers)
                self.counts["duplicates"] += 1
        self.counts["orders"] += 1

    async def rule_churn(self, stop: asyncio.Event) -> None:
        """Some sellers change their rule or pause and resume while orders stream."""
        while not stop.is_set():
            await asyncio.sleep(0.5)
            seller = self.rng.choice(self.sellers)
            if self.rng.random() < 0.3:
                current = self.rules[seller][-1]
                await self.set_rule(seller, self._random_rule(), active=not current.active)
                self.counts["pauses_or_resumes"] += 1
            else:
                await self.set_rule(seller, self._random_rule())

    async def stream(self) -> None:
        a = self.args
        queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=a.concurrency * 2)
        bar = tqdm(total=a.orders, unit="order", file=sys.stderr, disable=a.quiet)

        async def worker() -> None:
            while (n := await queue.get()) is not None:
                await self.one_order(n)
                bar.update(1)

        stop = asyncio.Event()
        churn = asyncio.create_task(self.rule_churn(stop))
        workers = [asyncio.create_task(worker()) for _ in range(a.concurrency)]
        started = time.monotonic()
        for n in range(a.orders):
            if a.rate > 0:
                await asyncio.sleep(max(0.0, started + n / a.rate - time.monotonic()))
            await queue.put(n)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        stop.set()
        await churn
        bar.close()
        self.counts["stream_seconds"] = int(time.monotonic() - started)

    def expected(self) -> Tally:
        tally = Tally()
        for plan in self.orders.values():
            rule = rule_at(self.rules[plan.seller_id], plan.placed_at)
            if rule is None or not rule.active or not plan.completed:
                continue
            if plan.currency != self.projects[rule.project_id]:
                continue
            tally.net[rule.project_id] += expected_net(plan, rule, self.projects[rule.project_id])
            accrual = donation_for(rule, plan.total_minor)
            if accrual > 0:
                tally.donations[rule.project_id] += 1
            if accrual < rule_amount(rule, plan.total_minor):
                tally.capped += 1
        return tally

    async def reported(self) -> dict[str, dict[str, Any]]:
        out = {}
        for project_id in self.projects:
            url = f"{self.args.charities_url}/v1/projects/{project_id}/totals"
            out[project_id] = await self._ok("GET", url, (200,))
        return out

    async def verify(self) -> bool:
        expected = self.expected()
        deadline = time.monotonic() + self.args.drain_timeout
        while True:
            reported = await self.reported()
            diffs = [
                (p, expected.net[p], reported[p]["net_minor"])
                for p in self.projects
                if expected.net[p] != reported[p]["net_minor"]
            ]
            if not diffs or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        print(f"{'project':38} {'expected':>12} {'reported':>12}  donations(exp/rep)")
        for p in sorted(self.projects):
            print(
                f"{p:38} {expected.net[p]:>12} {reported[p]['net_minor']:>12}  "
                f"{expected.donations[p]}/{reported[p]['donation_count']}"
            )
        total_expected = sum(expected.net.values())
        total_reported = sum(r["net_minor"] for r in reported.values())
        print(f"{'all projects':38} {total_expected:>12} {total_reported:>12}")
        print(f"accruals capped at the order total: {expected.capped}")
        print("counts: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())))
        if diffs:
            print(f"MISMATCH in {len(diffs)} project(s)")
            return False
        print("OK: every project total equals the independently computed total")
        return True


async def main(args: argparse.Namespace) -> int:
    secret = os.environ.get("GFG_JWT_SECRET")
    if not secret:
        print("GFG_JWT_SECRET is not set (make simulate sets it)", file=sys.stderr)
        return 2
    sim = Simulation(args, secret)
    try:
        await sim.setup()
        await sim.stream()
        return 0 if await sim.verify() else 1
    finally:
        await sim.client.aclose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0, help="orders/s; 0 = as fast as possible")
    parser.add_argument("--charities", type=int, default=3)
    parser.add_argument("--projects-per-charity", type=int, default=2)
    parser.add_argument("--sellers", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--small-order-share", type=float, default=0.1, help="share of orders of 1-10 fen"
    )
    parser.add_argument("--drain-timeout", type=float, default=120)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--orders-url", default="http://127.0.0.1:8001")
    parser.add_argument("--donations-url", default="http://127.0.0.1:8002")
    parser.add_argument("--charities-url", default="http://127.0.0.1:8003")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
