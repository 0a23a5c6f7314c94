"""The simulator's funds phase: after the orders have drained, follow the money out.

Run by ``make simulate`` after the totals check (``--no-funds`` skips it), against
services with a short return window (``GFG_RETURN_WINDOW_S`` of a few seconds; a window
longer than ``--posting-wait`` skips the phase and says so). As a charity would, it:

1. samples the newest donating orders' receipts: each ``available_on`` must be the
   order's ``completed_at`` plus the window, and none may be posted before it;
2. waits until every project's money is posted: ``posted_minor == net_minor``,
   ``pending_minor == 0`` (nothing is pending once every window has closed);
3. records a few disbursements per project through the charities API with a ``charity``
   token for the project's charity, of amounts that use part of the posted money; sends
   one of them again (the same body: 200, the same disbursement) and asks for one more
   than is available (422);
4. checks the totals once their cache has caught up (``disbursed_minor`` is the sum it
   disbursed, ``available_minor = posted_minor - disbursed_minor``) and every donating
   order's trace: each
   disbursement's allocations sum to its amount, no order gives more than its net and
   matches, every order is posted, and some donation entry was split across two
   disbursements (first in, first out ends a disbursement inside an entry).

The oracle here is the contract and what this client sent, not the service's code.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.auth import Role, issue_token

if TYPE_CHECKING:
    from tools.simulate import OrderPlan, Simulation

RECEIPT_SAMPLE = 30
# Shares of a project's posted money, one disbursement each (in this order).
SHARES = ((2, 5), (1, 4), (1, 10))


@dataclass
class FundsReport:
    window_s: float = 0.0
    skipped: str | None = None
    posted_after_s: float = 0.0  # from the end of the totals check until all was posted
    posted_minor: int = 0
    disbursed_minor: int = 0
    disbursements: int = 0
    retries: int = 0  # the same request again: 200, the same disbursement
    refused: int = 0  # more than available: 422
    split_entries: int = 0  # entries allocated to two disbursements or more
    traced_orders: int = 0
    posted_orders: int = 0
    pending_seen: int = 0  # sampled receipts still inside their window
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.skipped is not None:
            return f"funds: skipped ({self.skipped})"
        return (
            f"funds: window {self.window_s:g} s, all posted {self.posted_after_s:.1f} s after"
            f" the totals check ({self.pending_seen} sampled receipts still pending before);"
            f" posted {self.posted_minor}, {self.disbursements} disbursements of"
            f" {self.disbursed_minor}, {self.retries} retries (200), {self.refused} overdraws"
            f" refused (422), {self.split_entries} entries split across disbursements,"
            f" {self.posted_orders}/{self.traced_orders} traced orders posted;"
            f" {len(self.problems)} problems"
        )


async def follow_the_money(sim: Simulation) -> FundsReport:
    """The funds phase (module docstring); its problems are in the report."""
    if sim.window is None:
        sim.window = await sim.learn_window()
    if sim.window is None:
        return FundsReport(skipped="no receipt to learn the return window from")
    out = FundsReport(window_s=sim.window.total_seconds())
    if out.window_s > sim.args.posting_wait:
        out.skipped = (
            f"the services' return window is {out.window_s:g} s, longer than --posting-wait;"
            " start them with GFG_RETURN_WINDOW_S=5 GFG_POSTING_GRACE_S=2"
            " GFG_POSTING_INTERVAL_S=1"
        )
        return out
    started = time.monotonic()
    await _sample_receipts(sim, out)
    totals = await _wait_posted(sim, out, started + sim.args.posting_wait)
    out.posted_after_s = time.monotonic() - started
    out.posted_minor = sum(t["posted_minor"] for t in totals.values())
    if out.problems:
        return out
    disbursed = await _disburse(sim, out, totals)
    await _check_totals(sim, out, disbursed)
    await _check_traces(sim, out, disbursed)
    sim.counts["disbursements"] = out.disbursements
    sim.counts["split_entries"] = out.split_entries
    sim.counts["posted_orders"] = out.posted_orders
    return out


async def _sample_receipts(sim: Simulation, out: FundsReport) -> None:
    """The newest donating orders' receipts: ``available_on`` is ``completed_at`` plus the
    window, and a receipt read before ``available_on`` is pending."""
    assert sim.window is not None
    newest = sorted(
        (p for p in sim.orders.values() if p.completed_at and sim.donating(p)),
        key=lambda p: p.completed_at or datetime.min.replace(tzinfo=UTC),
    )[-RECEIPT_SAMPLE:]
    for plan in newest:
        assert plan.completed_at is not None
        url = f"{sim.args.donations_url}/v1/orders/{plan.order_id}/donation"
        response = await sim._call("GET", url)
        read_by = datetime.now(UTC)
        if response.status_code != 200:
            out.problems.append(f"order {plan.order_id}: receipt {response.status_code}")
            continue
        receipt = response.json()
        available_on = datetime.fromisoformat(receipt["available_on"])
        if available_on != plan.completed_at + sim.window:
            out.problems.append(
                f"order {plan.order_id}: available_on {available_on}, completed_at"
                f" {plan.completed_at} + window {sim.window}"
            )
        if receipt["status"] == "posted" and read_by < available_on:
            out.problems.append(f"order {plan.order_id}: posted before its {available_on}")
        if receipt["status"] == "pending":
            out.pending_seen += 1


async def _wait_posted(
    sim: Simulation, out: FundsReport, deadline: float
) -> dict[str, dict[str, Any]]:
    """Every project's totals once all of its money is posted (or at the deadline)."""
    while True:
        totals = await sim.reported()
        waiting = [p for p, t in totals.items() if t["posted_minor"] != t["net_minor"]]
        if not waiting or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    for p in sorted(waiting):
        t = totals[p]
        out.problems.append(
            f"project {p}: posted {t['posted_minor']}, net {t['net_minor']}, pending"
            f" {t['pending_minor']} after waiting {sim.args.posting_wait:g} s"
        )
    for p, t in sorted(totals.items()):
        if (t["disbursed_minor"], t["available_minor"]) != (0, t["posted_minor"]):
            out.problems.append(f"project {p}: before any disbursement {_funds(t)}")
    return totals


def _funds(t: dict[str, Any]) -> str:
    keys = ("net_minor", "pending_minor", "posted_minor", "disbursed_minor", "available_minor")
    return ", ".join(f"{k} {t[k]}" for k in keys)


async def _disburse(
    sim: Simulation, out: FundsReport, totals: dict[str, dict[str, Any]]
) -> dict[str, dict[str, int]]:
    """Disbursements per project with money (id -> amount), as its charity records them."""
    disbursed: dict[str, dict[str, int]] = {}
    for n, (project_id, t) in enumerate(sorted(totals.items())):
        posted = int(t["posted_minor"])
        amounts = [posted * num // den for num, den in SHARES if posted * num // den > 0]
        if not amounts:
            continue
        charity = sim.charity_of[project_id]
        token = issue_token(sim.secret, Role.CHARITY, charities=[charity])
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{sim.args.charities_url}/v1/projects/{project_id}/disbursements"
        mine = disbursed.setdefault(project_id, {})
        for k, amount in enumerate(amounts):
            evidence = f"receipt {sim.run_id} {n}.{k}".encode()
            disbursement_id = str(uuid.uuid4())
            body: dict[str, Any] = {
                "disbursement_id": disbursement_id,
                "amount_minor": amount,
                "recipient": f"School {n}.{k} ({sim.run_id})",
                "purpose": f"Books, batch {k}",
                "evidence_sha256": hashlib.sha256(evidence).hexdigest(),
                "evidence_url": f"https://example.org/sim/{sim.run_id}/{n}-{k}.pdf",
            }
            # A retry after a lost answer is a 200 for the same disbursement: both are fine.
            first = await sim._ok("POST", url, (200, 201), json=body, headers=headers)
            mine[disbursement_id] = amount
            out.disbursements += 1
            out.disbursed_minor += amount
            if first["amount_minor"] != amount or first["currency"] != t["currency"]:
                out.problems.append(f"disbursement {disbursement_id}: {first}")
            if k == 1:  # a charity's retry of the same request
                again = await sim._call("POST", url, json=body, headers=headers)
                out.retries += 1
                if again.status_code != 200 or again.json() != first:
                    out.problems.append(
                        f"disbursement {disbursement_id} again: {again.status_code}"
                        f" {again.text[:300]}"
                    )
        over: dict[str, Any] = {
            "disbursement_id": str(uuid.uuid4()),
            "amount_minor": posted - sum(amounts) + 1,
            "recipient": f"Overdraw ({sim.run_id})",
            "purpose": "More than is available",
        }
        refused = await sim._call("POST", url, json=over, headers=headers)
        if refused.status_code == 422:
            out.refused += 1
        else:
            out.problems.append(f"project {project_id}: overdraw got {refused.status_code}")
    return disbursed


async def _check_totals(
    sim: Simulation, out: FundsReport, disbursed: dict[str, dict[str, int]]
) -> None:
    """The totals after the disbursements; polled until they agree or the drain deadline,
    as totals are served from a cache that may be a few seconds old."""
    deadline = time.monotonic() + sim.args.drain_timeout
    while True:
        problems = []
        for project_id, t in sorted((await sim.reported()).items()):
            mine = sum(disbursed.get(project_id, {}).values())
            posted = t["posted_minor"]
            if (
                t["disbursed_minor"] != mine
                or t["available_minor"] != posted - mine
                or (t["pending_minor"], posted) != (0, t["net_minor"])
            ):
                problems.append(f"project {project_id}: disbursed {mine}, totals {_funds(t)}")
        if not problems or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    out.problems += problems


async def _check_traces(
    sim: Simulation, out: FundsReport, disbursed: dict[str, dict[str, int]]
) -> None:
    """Every donating order's trace, against the disbursements recorded."""
    gate = asyncio.Semaphore(sim.args.concurrency)

    async def trace(plan: OrderPlan) -> tuple[OrderPlan, Any]:
        async with gate:
            url = f"{sim.args.charities_url}/v1/orders/{plan.order_id}/trace"
            response = await sim._call("GET", url)
        return plan, response.json() if response.status_code == 200 else response.status_code

    plans = [p for p in sim.orders.values() if sim.donating(p) in disbursed]
    allocated: dict[str, int] = defaultdict(int)  # disbursement -> sum of its allocations
    users: dict[str, set[str]] = defaultdict(set)  # entry -> disbursements it went to
    for plan, body in await asyncio.gather(*(trace(p) for p in plans)):
        out.traced_orders += 1
        if not isinstance(body, dict):
            out.problems.append(f"order {plan.order_id}: trace {body}")
            continue
        out.posted_orders += body["status"] == "posted"
        if body["status"] != "posted":
            out.problems.append(f"order {plan.order_id}: {body['status']} after the wait")
        total = 0
        for a in body["allocations"]:
            allocated[a["disbursement_id"]] += a["amount_minor"]
            users[a["entry_id"]].add(a["disbursement_id"])
            total += a["amount_minor"]
        worth = body["net_minor"] + body["matched_minor"]
        if total > worth or body["unallocated_minor"] != worth - total:
            out.problems.append(
                f"order {plan.order_id}: allocated {total} of {worth},"
                f" unallocated_minor {body['unallocated_minor']}"
            )
    for project_id, mine in sorted(disbursed.items()):
        for disbursement_id, amount in sorted(mine.items()):
            if allocated.get(disbursement_id, 0) != amount:
                out.problems.append(
                    f"disbursement {disbursement_id} of {project_id}: amount {amount}, the"
                    f" traces allocate {allocated.get(disbursement_id, 0)}"
                )
    out.split_entries = sum(1 for used in users.values() if len(used) > 1)
    if out.split_entries == 0 and any(len(mine) > 1 for mine in disbursed.values()):
        out.problems.append("no donation entry was split across two disbursements")
