"""``make simulate``: a marketplace streaming orders through the orders API.

Creates charities and projects, gives sellers a mix of fixed and percent rules (some change
their rule or pause mid-run; some donate per unit of their charity items, a few only
through them with a fixed amount of 0), starts sponsors' matching campaigns with small
budgets (one by ratio, one per item for some sellers) that run out mid-run, streams orders
(completed, placed-then-completed, cancelled, fully and partly refunded, currency
mismatches, duplicate retries, and a share of 1-10 fen orders, below many fixed rules, so
the cap at the order total is exercised) at a rate or as fast as possible, and finally
compares the totals the services report with the totals computed here, independently,
from what was posted. Then it follows the money (``tools.funds``): waits until every
donation is posted, records disbursements as the charities would, and checks the totals
and the traces. Exit status 1 on any difference.

The return window (learned from a receipt): a refund made at or after its order's
``available_on`` (``completed_at`` plus the window) reverses nothing, so the oracle
counts only the refunds made before it. With a window of a few seconds, a refund delayed
by a fault (a retry while the orders service restarts) can land after it.

What the oracle knows exactly and what only within bounds:
- The sellers' donations (``net_minor - matched_minor`` of each project, and the
  donation counts) are exact. Orders with charity items are priced so that the cap at the
  order total never applies to them: where it would, how the capped amount splits into an
  order part and an item part is the service's choice, not the contract's.
- A campaign's ``matched_minor`` depends on which orders the budget reached first, and
  that is the order in which the donations consumer happens to process accruals (partition
  interleaving), which no client can know. It is exact (``min(budget, sum of the per-order
  matches)``) when no refund touched an order the campaign could match; otherwise it is
  checked within bounds (``expected_matched``), and each project's ``matched_minor`` must
  equal the sum of its campaigns' (internal consistency).
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
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from shared.auth import Role, issue_token
from tools import loadgen
from tools.funds import follow_the_money

CHARITY_ITEMS = ["charity-book", "charity-tea", "charity-scarf"]


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
    per_item: dict[str, int] = field(default_factory=dict)  # item_id -> per unit sold


@dataclass(frozen=True)
class CampaignPlan:
    campaign_id: str
    project_id: str
    ratio_bp: int
    per_item_minor: int
    per_order_cap_minor: int | None
    budget_minor: int
    starts_at: datetime
    ends_at: datetime
    sellers: frozenset[str] | None = None


@dataclass(frozen=True)
class MatchBounds:
    """What a campaign's ``matched_minor`` may be; ``exact`` when ``lower == upper`` is
    known from the contract alone (no refund touched an order it could match)."""

    lower: int
    upper: int
    exact: bool


@dataclass
class OrderPlan:
    order_id: str
    seller_id: str
    currency: str
    total_minor: int
    placed_at: datetime
    completed: bool = False
    refunded_totals: list[int] = field(default_factory=list)  # cumulative, one per refund
    items: list[tuple[str, int]] = field(default_factory=list)  # (item_id, quantity)
    completed_at: datetime | None = None  # as the orders service recorded it
    refunded_at: list[datetime] = field(default_factory=list)  # each refund's created_at

    @property
    def refunded_minor(self) -> int:
        return self.refunded_totals[-1] if self.refunded_totals else 0

    @property
    def units(self) -> int:
        return sum(quantity for _, quantity in self.items)


@dataclass
class Tally:
    """Expected project totals, computed from the posted facts with exact fractions."""

    net: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # sellers' only
    donations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    capped: int = 0  # orders whose accrual the order's total capped
    matched: dict[str, MatchBounds] = field(default_factory=dict)  # per campaign


def within_window(plan: OrderPlan, window: timedelta | None) -> OrderPlan:
    """``plan`` with only the refunds that can reverse its donation: those made before
    its ``available_on`` (``completed_at + window``). A refund at or after it reverses
    nothing (the donation is final). No window known: every refund counts."""
    if window is None or plan.completed_at is None or not plan.refunded_at:
        return plan
    available_on = plan.completed_at + window
    kept = [
        total
        for total, at in zip(plan.refunded_totals, plan.refunded_at, strict=True)
        if at < available_on
    ]
    return replace(plan, refunded_totals=kept, refunded_at=plan.refunded_at[: len(kept)])


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


def item_part(rule: RuleVersion, items: Sequence[tuple[str, int]]) -> int:
    """The ``per_item`` part before the cap: ``quantity * amount_minor`` over the order's
    lines whose item the rule lists (an item on several lines counts on each)."""
    return sum(rule.per_item.get(item_id, 0) * quantity for item_id, quantity in items)


def donation_for(rule: RuleVersion, total_minor: int, items: Sequence[tuple[str, int]] = ()) -> int:
    """The accrual of a completed order: the rule's amount plus the item part, capped at
    the order's total.

    The cap applies here, when the accrual is made (a fixed 31 on an order of 4 gives 4).
    """
    return max(0, min(rule_amount(rule, total_minor) + item_part(rule, items), total_minor))


def net_after_refunds(
    rule: RuleVersion,
    total_minor: int,
    refunded_totals: Sequence[int],
    items: Sequence[tuple[str, int]] = (),
) -> int:
    """An order's net donation after its accrual and then each refund, in order.

    ``refunded_totals`` are the order's cumulative refunded totals, one per refund. The
    order part: a ``percent`` rule's becomes the rule applied to ``total_minor -
    refunded_total``, with no second cap at that remainder; the difference is one
    reversal, which is never negative (a refund never adds to a donation); a ``fixed``
    rule's is reversed whole by a full refund and not otherwise. The item part is reversed
    only by a full refund. The net never goes below 0.

    Exact when the accrual was not capped. When it was and the rule lists items, the
    contract does not say which part the cap came off; this takes it off the item part
    (the simulator never lets that case happen).
    """
    net = donation_for(rule, total_minor, items)
    items_net = min(item_part(rule, items), net)
    order_net = net - items_net
    for refunded_total in refunded_totals:
        full = refunded_total >= total_minor
        if rule.mode == "fixed":
            target = 0 if full else order_net
        else:
            target = rule_amount(rule, max(0, total_minor - refunded_total))
        order_net -= max(0, order_net - max(0, target))
        if full:
            items_net = 0
    return order_net + items_net


def expected_net(order: OrderPlan, rule: RuleVersion | None, project_currency: str) -> int:
    """The net donation the contract gives ``order`` under ``rule`` (the version in effect at
    ``placed_at``): nothing without a rule, for an inactive one, or in another currency."""
    if not order.completed or rule is None or not rule.active:
        return 0
    if order.currency != project_currency:
        return 0
    return net_after_refunds(rule, order.total_minor, order.refunded_totals, order.items)


def campaign_matches(campaign: CampaignPlan, project_id: str, order: OrderPlan) -> bool:
    """Whether an accrual of ``order`` to ``project_id`` is one the campaign matches:
    its project, placed in ``[starts_at, ends_at)``, by one of its sellers if it names any."""
    return (
        project_id == campaign.project_id
        and campaign.starts_at <= order.placed_at < campaign.ends_at
        and (campaign.sellers is None or order.seller_id in campaign.sellers)
    )


def match_for(campaign: CampaignPlan, accrual_minor: int, units: int) -> int:
    """The match an accrual asks of the campaign before its budget: ``ratio_bp`` of the
    accrual (exact ``Fraction``, half up) plus ``per_item_minor`` per unit in the order,
    capped at ``per_order_cap_minor``. No accrual (0 records nothing), no match."""
    if accrual_minor <= 0:
        return 0
    ratio = math.floor(Fraction(accrual_minor * campaign.ratio_bp, 10_000) + Fraction(1, 2))
    amount = ratio + campaign.per_item_minor * units
    if campaign.per_order_cap_minor is not None:
        amount = min(amount, campaign.per_order_cap_minor)
    return amount


def expected_matched(budget_minor: int, asks: Sequence[tuple[int, str]]) -> MatchBounds:
    """A campaign's ``matched_minor`` from its per-order asks ``(match_for, refund)``,
    ``refund`` one of ``none``, ``partial``, ``full``, whatever order the consumer took.

    - No refunded order among them: exactly ``min(budget, sum of asks)``; the budget runs
      out on some order, and which one does not change the sum.
    - Otherwise: at most the budget and at most the asks of orders not fully refunded (a
      full refund reverses all of its order's match); at least ``min(budget, sum of
      asks)`` less the asks of refunded orders (a reversal takes back at most what its
      order got, and the budget it gives back can only raise later matches).
    """
    total = sum(ask for ask, _ in asks)
    refunded = sum(ask for ask, refund in asks if refund != "none")
    fully = sum(ask for ask, refund in asks if refund == "full")
    if refunded == 0:
        exact = min(budget_minor, total)
        return MatchBounds(exact, exact, True)
    upper = min(budget_minor, total - fully)
    lower = max(0, min(budget_minor, total) - refunded)
    return MatchBounds(lower, upper, lower == upper)


class Simulation:
    def __init__(self, args: argparse.Namespace, secret: str) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.secret = secret
        self.run_id = uuid.uuid4().hex[:8]
        self.admin = self._auth(Role.ADMIN, [])
        self.projects: dict[str, str] = {}  # project_id -> currency
        self.charity_of: dict[str, str] = {}  # project_id -> charity_id
        # The services' return window, learned from a receipt (or --return-window-s).
        self.window: timedelta | None = None
        self.sellers: list[str] = []
        self.rules: dict[str, list[RuleVersion]] = defaultdict(list)
        self.orders: dict[str, OrderPlan] = {}
        self.item_sellers: set[str] = set()  # sellers with charity items (per_item rules)
        self.campaigns: list[CampaignPlan] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.client = httpx.AsyncClient(timeout=30)  # setup, rule changes, totals
        self.engine: loadgen.Engine | None = None
        self.achieved: loadgen.Achieved | None = None
        # Per order, the counts it adds (cancelled, refunds_full, ...) once it was sent.
        self.planned_counts: dict[str, Counter[str]] = defaultdict(Counter)
        # The longest wait of an orders event in the orders outbox, as its relay reports
        # it (sampled while streaming and verifying), and the donations service's count of
        # refunds that arrived after their order was posted, at the start.
        self.outbox_hold = 0.0
        self.after_posting_at_start: float | None = None

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

    async def metric(self, base_url: str, name: str, **labels: str) -> float | None:
        """A sample of a service's ``/metrics`` (None when absent or unreachable)."""
        try:
            response = await self.client.get(f"{base_url}/metrics")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    async def refunds_after_posting(self) -> float | None:
        return await self.metric(
            self.args.donations_url,
            "gfg_donations_refunds_after_window_total",
            reason="after_posting",
        )

    async def watch_outbox(self, stop: asyncio.Event) -> None:
        """Keeps the longest orders outbox hold seen, once a second until ``stop``."""
        while not stop.is_set():
            age = await self.metric(
                self.args.orders_url, "gfg_outbox_oldest_age_seconds", service="orders"
            )
            if age is not None:
                self.outbox_hold = max(self.outbox_hold, age)
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass

    def lateness(self, after_posting: float | None) -> list[str]:
        """What the report says of late events: the longest outbox hold seen and the
        refunds that reached the donations service after their order was posted."""
        grace = os.environ.get("GFG_POSTING_GRACE_S", "the services' setting")
        lines = [
            f"orders outbox: longest hold seen {self.outbox_hold:.1f} s"
            f" (sampled by its relay every 5 s); posting grace {grace} s"
        ]
        if after_posting is not None and self.after_posting_at_start is not None:
            late = int(after_posting - self.after_posting_at_start)
            self.counts["refunds_after_posting"] = late
            if late > 0:
                lines.append(
                    f"{late} refunds reached the donations service after their order was"
                    " posted and reversed nothing (reason after_posting): their events"
                    " waited longer than the posting grace on the way, which the posting"
                    " job assumes they never do. The oracle counts them as reversals."
                    " Run with a longer GFG_POSTING_GRACE_S for this load."
                )
        return lines

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
                self.charity_of[project["project_id"]] = charity["charity_id"]
        self.sellers = [f"sim-{self.run_id}-s{n}" for n in range(a.sellers)]
        self.item_sellers = {s for s in self.sellers if self.rng.random() < a.item_seller_share}
        for seller in self.sellers:
            await self.set_rule(seller, self._random_rule(seller))
        await self.start_campaigns()

    async def start_campaigns(self) -> None:
        """Two campaigns on one project with small budgets, so they run out mid-run: one
        matching half of each accrual, one matching per unit for half of the sellers."""
        if self.args.campaigns == 0:
            return
        project_id = sorted(self.projects)[0]
        now = datetime.now(UTC)
        bodies = [
            {"ratio_bp": 5_000, "per_order_cap_minor": 300, "budget_minor": self.args.budget},
            {
                "ratio_bp": 0,
                "per_item_minor": 7,
                "per_order_cap_minor": 50,
                "budget_minor": self.args.budget // 2,
                "sellers": sorted(self.sellers)[: len(self.sellers) // 2],
            },
        ][: self.args.campaigns]
        for n, extra in enumerate(bodies):
            body = {
                "campaign_id": f"sim-{self.run_id}-c{n}",
                "sponsor": f"Sponsor {n} ({self.run_id})",
                "project_id": project_id,
                "starts_at": now.isoformat(),
                "ends_at": (now + timedelta(days=1)).isoformat(),
                **extra,
            }
            created = await self._ok(
                "POST", f"{self.args.donations_url}/v1/campaigns", (201,), json=body,
                headers=self.admin,
            )  # fmt: skip
            self.campaigns.append(
                CampaignPlan(
                    campaign_id=created["campaign_id"],
                    project_id=str(created["project_id"]),
                    ratio_bp=created["ratio_bp"],
                    per_item_minor=created.get("per_item_minor") or 0,
                    per_order_cap_minor=created.get("per_order_cap_minor"),
                    budget_minor=created["budget_minor"],
                    starts_at=datetime.fromisoformat(created["starts_at"]),
                    ends_at=datetime.fromisoformat(created["ends_at"]),
                    sellers=frozenset(created["sellers"]) if created.get("sellers") else None,
                )
            )

    def _random_rule(self, seller: str) -> dict[str, Any]:
        project_id = self.rng.choice(sorted(self.projects))
        rule: dict[str, Any]
        if seller in self.item_sellers:
            items = self.rng.sample(CHARITY_ITEMS, self.rng.randint(1, len(CHARITY_ITEMS)))
            per_item = [{"item_id": i, "amount_minor": self.rng.randint(1, 50)} for i in items]
            if self.rng.random() < 0.3:  # donates only through its charity items
                return {"project_id": project_id, "mode": "fixed", "amount_minor": 0,
                        "per_item": per_item}  # fmt: skip
            rule = self._order_rule(project_id)
            rule["per_item"] = per_item
            return rule
        return self._order_rule(project_id)

    def _order_rule(self, project_id: str) -> dict[str, Any]:
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
                per_item={i["item_id"]: i["amount_minor"] for i in body.get("per_item") or []},
            )
        )
        self.counts["rule_changes"] += 1

    def plan_order(self, n: int) -> loadgen.Script:
        """Order ``n``: its plan for the oracle and its calls for a worker, in one draw from
        the seeded generator. ``placed_at`` and ``completed_at`` are stamped when sent."""
        a, rng = self.args, self.rng
        tags = self.planned_counts[f"sim-{self.run_id}-{n}"]
        seller = rng.choice(self.sellers)
        order_id = f"sim-{self.run_id}-{n}"
        if rng.random() < a.small_order_share:  # 1-10 fen: fixed rules above the total occur
            quantity, price = 1, rng.randint(1, 10)
            tags["small_orders"] += 1
        else:
            quantity, price = rng.randint(1, 5), rng.randint(1, 50_000)
        lines = [("sku", quantity, price)]
        if seller in self.item_sellers and quantity * price > 10 and rng.random() < 0.6:
            # Charity items cost at least CNY 10 a unit: with at most 50 fen per unit and
            # order parts of at most 5 % (+ 200 fen), the cap at the total never applies.
            lines.append((rng.choice(CHARITY_ITEMS), rng.randint(1, 3), rng.randint(1000, 20_000)))
            tags["charity_item_orders"] += 1
        currency = "USD" if rng.random() < 0.02 else "CNY"
        total = sum(q * p for _, q, p in lines)
        plan = OrderPlan(order_id, seller, currency, total, datetime.now(UTC))
        plan.items = [(item_id, q) for item_id, q, _ in lines]
        body: dict[str, Any] = {
            "order_id": order_id,
            "seller_id": seller,
            "currency": currency,
            "total_minor": plan.total_minor,
            "items": [{"item_id": i, "quantity": q, "unit_price_minor": p} for i, q, p in lines],
            "placed_at": loadgen.NOW,
        }
        roll = rng.random()
        path = f"/v1/orders/{order_id}"
        self.orders[order_id] = plan
        if roll < 0.6:  # posted as completed in one call
            body |= {"status": "completed", "completed_at": loadgen.NOW}
            plan.completed = True
        create = orjson.dumps(body)
        calls = [loadgen.Call("POST", "/v1/orders", (200, 201), create)]
        if 0.6 <= roll < 0.9:
            calls.append(loadgen.Call("POST", f"{path}/complete", (200,)))
            plan.completed = True
        elif roll >= 0.9:
            calls.append(loadgen.Call("POST", f"{path}/cancel", (200,)))
            tags["cancelled"] += 1
        if rng.random() < 0.05:  # a storefront retrying the same POST
            calls.append(loadgen.Call("POST", "/v1/orders", (200,), create))
            tags["duplicates"] += 1
        if plan.completed and rng.random() < 0.1:
            full = rng.random() < 0.4
            amount = plan.total_minor if full else rng.randint(1, plan.total_minor)
            refund = orjson.dumps({"refund_id": f"{order_id}-r1", "amount_minor": amount})
            calls.append(loadgen.Call("POST", f"{path}/refunds", (200, 201), refund))
            plan.refunded_totals.append(plan.refunded_minor + amount)
            tags["refunds_full" if full else "refunds_partial"] += 1
            if rng.random() < 0.3:
                calls.append(loadgen.Call("POST", f"{path}/refunds", (200,), refund))
                tags["duplicates"] += 1
        return loadgen.Script(n, seller, order_id, tuple(calls))

    async def rule_churn(self, stop: asyncio.Event) -> None:
        """Some sellers change their rule or pause and resume while orders stream."""
        while not stop.is_set():
            await asyncio.sleep(0.5)
            seller = self.rng.choice(self.sellers)
            if self.rng.random() < 0.3:
                current = self.rules[seller][-1]
                await self.set_rule(seller, self._random_rule(seller), active=not current.active)
                self.counts["pauses_or_resumes"] += 1
            else:
                await self.set_rule(seller, self._random_rule(seller))

    def progress(self) -> tuple[int, int]:
        """(orders, requests) sent so far; (0, 0) before the stream starts."""
        return self.engine.progress() if self.engine is not None else (0, 0)

    def halt(self) -> None:
        """Starts no further order: those not started are left out of the oracle."""
        if self.engine is not None:
            self.engine.halt()

    async def stream(self) -> None:
        """Plans every order, then sends them from worker processes (``tools.loadgen``) while
        rules change here; the plans take the ``placed_at`` the workers stamped."""
        a = self.args
        scripts = [self.plan_order(n) for n in range(a.orders)]
        config = loadgen.Config(a.orders_url, self.secret, a.rate, a.concurrency)
        workers = a.workers or loadgen.default_workers(a.rate)
        self.engine = loadgen.Engine(scripts, config, workers)
        last = [0.0]

        def progress(orders: int, requests: int, seconds: float) -> None:
            if a.quiet or seconds - last[0] < 5 or seconds <= 0:
                return
            last[0] = seconds
            print(
                f"{orders}/{a.orders} orders in {seconds:.0f} s: {orders / seconds:.0f} orders/s,"
                f" {requests / seconds:.0f} requests/s",
                file=sys.stderr,
            )

        stop = asyncio.Event()
        churn = asyncio.create_task(self.rule_churn(stop))
        loop = asyncio.get_running_loop()
        timer = loop.call_later(a.duration, self.halt) if a.duration > 0 else None
        try:
            self.achieved, results = await self.engine.run(progress)
        finally:
            if timer is not None:
                timer.cancel()
            stop.set()
            await churn
        sent: dict[str, OrderPlan] = {}
        for result in results:
            for key in ("requests", "retries_transport", "retries_5xx"):
                self.counts[key] += result.counts[key]
            for order_id, placed_at in result.placed_at.items():
                sent[order_id] = self.orders[order_id]
                sent[order_id].placed_at = datetime.fromisoformat(placed_at)
                for key, count in self.planned_counts[order_id].items():
                    self.counts[key] += count
        self.orders = sent  # a halted run: what was sent, nothing else
        errors = [r.error for r in results if r.error]
        if errors:
            raise RuntimeError("; ".join(errors))
        self.counts["orders"] = self.achieved.orders
        self.counts["stream_seconds"] = int(self.achieved.seconds)
        print(self.achieved.line(), file=sys.stderr if a.quiet else sys.stdout)

    def expected(self) -> Tally:
        tally = Tally()
        asks: dict[str, list[tuple[int, str]]] = {c.campaign_id: [] for c in self.campaigns}
        for plan in (within_window(p, self.window) for p in self.orders.values()):
            rule = rule_at(self.rules[plan.seller_id], plan.placed_at)
            if rule is None or not rule.active or not plan.completed:
                continue
            if plan.currency != self.projects[rule.project_id]:
                continue
            tally.net[rule.project_id] += expected_net(plan, rule, self.projects[rule.project_id])
            accrual = donation_for(rule, plan.total_minor, plan.items)
            if accrual > 0:
                tally.donations[rule.project_id] += 1
            if accrual < rule_amount(rule, plan.total_minor) + item_part(rule, plan.items):
                tally.capped += 1
            refund = "none"
            if plan.refunded_totals:
                refund = "full" if plan.refunded_minor >= plan.total_minor else "partial"
            for campaign in self.campaigns:
                if campaign_matches(campaign, rule.project_id, plan):
                    ask = match_for(campaign, accrual, plan.units)
                    if ask > 0:
                        asks[campaign.campaign_id].append((ask, refund))
        for campaign in self.campaigns:
            bounds = expected_matched(campaign.budget_minor, asks[campaign.campaign_id])
            tally.matched[campaign.campaign_id] = bounds
        return tally

    async def reported(self) -> dict[str, dict[str, Any]]:
        out = {}
        for project_id in self.projects:
            url = f"{self.args.charities_url}/v1/projects/{project_id}/totals"
            out[project_id] = await self._ok("GET", url, (200,))
        return out

    async def reported_campaigns(self) -> dict[str, dict[str, Any]]:
        out = {}
        for campaign in self.campaigns:
            url = f"{self.args.donations_url}/v1/campaigns/{campaign.campaign_id}"
            out[campaign.campaign_id] = await self._ok("GET", url, (200,))
        return out

    def differences(
        self,
        expected: Tally,
        reported: dict[str, dict[str, Any]],
        campaigns: dict[str, dict[str, Any]],
    ) -> list[str]:
        """Every way the reported totals differ from the oracle (see the module docstring
        for what is exact and what is bounded)."""
        out = []
        for p in self.projects:
            sellers_net = reported[p]["net_minor"] - reported[p].get("matched_minor", 0)
            if expected.net[p] != sellers_net:
                out.append(f"project {p}: sellers' net {sellers_net}, expected {expected.net[p]}")
            of_campaigns = sum(
                campaigns[c.campaign_id]["matched_minor"]
                for c in self.campaigns
                if c.project_id == p
            )
            if reported[p].get("matched_minor", 0) != of_campaigns:
                out.append(
                    f"project {p}: matched {reported[p].get('matched_minor', 0)}, "
                    f"its campaigns matched {of_campaigns}"
                )
        for c in self.campaigns:
            got = campaigns[c.campaign_id]
            bounds = expected.matched[c.campaign_id]
            if not bounds.lower <= got["matched_minor"] <= bounds.upper:
                out.append(f"campaign {c.campaign_id}: matched {got['matched_minor']}, {bounds}")
            if got["remaining_minor"] != c.budget_minor - got["matched_minor"]:
                out.append(f"campaign {c.campaign_id}: remaining {got['remaining_minor']}")
        return out

    def donating(self, plan: OrderPlan) -> str | None:
        """The project ``plan``'s accrual went to, if the contract gives it one."""
        rule = rule_at(self.rules[plan.seller_id], plan.placed_at)
        if rule is None or not rule.active or not plan.completed:
            return None
        if plan.currency != self.projects[rule.project_id]:
            return None
        return rule.project_id if donation_for(rule, plan.total_minor, plan.items) > 0 else None

    async def learn_window(self) -> timedelta | None:
        """The services' return window: ``--return-window-s``, or a receipt's
        ``available_on`` minus its order's ``completed_at`` (the window runs from it).
        None without a receipt by the drain deadline (then every refund counts, and the
        totals check names the missing donations)."""
        if self.args.return_window_s is not None:
            return timedelta(seconds=self.args.return_window_s)
        done = [p for p in self.orders.values() if p.completed_at and self.donating(p)]
        done.sort(key=lambda p: p.completed_at or datetime.min.replace(tzinfo=UTC))
        deadline = time.monotonic() + self.args.drain_timeout
        while done:
            for plan in done[:20]:
                url = f"{self.args.donations_url}/v1/orders/{plan.order_id}/donation"
                response = await self._call("GET", url)
                if response.status_code == 200 and response.json().get("available_on"):
                    assert plan.completed_at is not None
                    return datetime.fromisoformat(response.json()["available_on"]) - (
                        plan.completed_at
                    )
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        return None

    def late_refunds(self) -> int:
        """Refunds made at or after their order's ``available_on`` (they reverse nothing)."""
        return sum(
            len(p.refunded_at) - len(within_window(p, self.window).refunded_at)
            for p in self.orders.values()
        )

    async def fetch_times(self) -> None:
        """``completed_at`` and each refund's ``created_at`` from the orders API, for the
        orders whose sending did not record them (an engine that does not read answers):
        the refunded ones, and a few donating ones to learn the window from. A refund sent
        again (its id is ``<order_id>-r<n>``, n from 1) answers with the stored one."""
        refunded = [
            p
            for p in self.orders.values()
            if p.completed and len(p.refunded_at) < len(p.refunded_totals)
        ]
        some = [p for p in self.orders.values() if self.donating(p) and not p.completed_at]
        gate = asyncio.Semaphore(self.args.concurrency)

        async def one(plan: OrderPlan) -> None:
            headers = self._auth(Role.STOREFRONT, [plan.seller_id])
            url = f"{self.args.orders_url}/v1/orders/{plan.order_id}"
            async with gate:
                if plan.completed_at is None:
                    order = await self._ok("GET", url, (200,), headers=headers)
                    plan.completed_at = datetime.fromisoformat(order["completed_at"])
                before = 0
                plan.refunded_at = []
                for n, total in enumerate(plan.refunded_totals, start=1):
                    body = {"refund_id": f"{plan.order_id}-r{n}", "amount_minor": total - before}
                    stored = await self._ok("POST", f"{url}/refunds", (200,), json=body,
                                            headers=headers)  # fmt: skip
                    plan.refunded_at.append(datetime.fromisoformat(stored["created_at"]))
                    before = total

        targets = {p.order_id: p for p in refunded + some[:20]}
        await asyncio.gather(*(one(p) for p in targets.values()))

    async def verify(self) -> bool:
        if self.window is None:
            await self.fetch_times()
            self.window = await self.learn_window()
        self.counts["refunds_after_window"] = self.late_refunds()
        expected = self.expected()
        deadline = time.monotonic() + self.args.drain_timeout
        while True:
            reported = await self.reported()
            campaigns = await self.reported_campaigns()
            diffs = self.differences(expected, reported, campaigns)
            if not diffs or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        print(f"{'project':38} {'sellers exp':>12} {'reported':>12} {'matched':>9}  donations")
        for p in sorted(self.projects):
            matched = reported[p].get("matched_minor", 0)
            print(
                f"{p:38} {expected.net[p]:>12} {reported[p]['net_minor'] - matched:>12} "
                f"{matched:>9}  {expected.donations[p]}/{reported[p]['donation_count']}"
            )
        total_expected = sum(expected.net.values())
        total_reported = sum(r["net_minor"] - r.get("matched_minor", 0) for r in reported.values())
        print(f"{'all projects (sellers)':38} {total_expected:>12} {total_reported:>12}")
        for c in self.campaigns:
            bounds = expected.matched[c.campaign_id]
            kind = "exact" if bounds.exact else "bounded"
            print(
                f"campaign {c.campaign_id}: budget {c.budget_minor}, matched "
                f"{campaigns[c.campaign_id]['matched_minor']} ({kind}: {bounds.lower}"
                f"..{bounds.upper}), status {campaigns[c.campaign_id]['status']}"
            )
        print(f"accruals capped at the order total: {expected.capped}")
        for line in self.lateness(await self.refunds_after_posting()):
            print(line)
        print("counts: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())))
        if diffs:
            for line in diffs:
                print(f"MISMATCH {line}")
            return False
        print("OK: every total equals (or, for matches, lies within) the oracle's")
        return True


async def main(args: argparse.Namespace) -> int:
    secret = os.environ.get("GFG_JWT_SECRET")
    if not secret:
        print("GFG_JWT_SECRET is not set (make simulate sets it)", file=sys.stderr)
        return 2
    sim = Simulation(args, secret)
    stop_watching = asyncio.Event()
    watching: asyncio.Task[None] | None = None
    try:
        await sim.setup()
        sim.after_posting_at_start = await sim.refunds_after_posting()
        watching = asyncio.create_task(sim.watch_outbox(stop_watching))
        await sim.stream()
        if not await sim.verify():
            return 1
        if args.no_funds:
            return 0
        funds = await follow_the_money(sim)
        print(funds.summary())
        for line in funds.problems:
            print(f"MISMATCH {line}")
        return 0 if funds.ok else 1
    finally:
        stop_watching.set()
        if watching is not None:
            await watching
        await sim.client.aclose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0, help="orders/s; 0 = as fast as possible")
    parser.add_argument("--charities", type=int, default=3)
    parser.add_argument("--projects-per-charity", type=int, default=2)
    parser.add_argument("--sellers", type=int, default=40)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="orders in flight per worker process"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="sending processes; 0 = enough for the rate"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--small-order-share", type=float, default=0.1, help="share of orders of 1-10 fen"
    )
    parser.add_argument(
        "--item-seller-share", type=float, default=0.3, help="share of sellers with charity items"
    )
    parser.add_argument("--campaigns", type=int, choices=(0, 1, 2), default=2)
    parser.add_argument(
        "--budget", type=int, default=5_000, help="the ratio campaign's budget (the other: half)"
    )
    parser.add_argument(
        "--duration", type=float, default=0, help="s; start no order after it (0 = send all)"
    )
    parser.add_argument("--drain-timeout", type=float, default=120)
    parser.add_argument(
        "--return-window-s",
        type=float,
        help="the services' GFG_RETURN_WINDOW_S; default: learned from a receipt",
    )
    parser.add_argument(
        "--no-funds", action="store_true", help="skip waiting for postings and disbursing"
    )
    parser.add_argument(
        "--posting-wait",
        type=float,
        default=120,
        help="how long to wait for everything to be posted (window and grace included);"
        " a longer return window skips the funds phase",
    )
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--orders-url", default="http://127.0.0.1:8001")
    parser.add_argument("--donations-url", default="http://127.0.0.1:8002")
    parser.add_argument("--charities-url", default="http://127.0.0.1:8003")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
