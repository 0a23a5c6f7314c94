"""Short simulations with several seeds: totals and reconciliation equal the oracle.

Each seed streams a few hundred orders (a share of them of 1-10 fen, below many fixed
rules, plus refunds, cancellations, retries, rule changes and pauses) through the running
stack; the charities totals must equal the simulator's independently computed totals, and
``tools.reconcile`` must find no difference between orders, ledger and totals. Then, with
the stack's return window of seconds, the funds phase (``tools.funds``) waits until every
donation is posted, disburses part of each project's money (one retry, one overdraw
refused, an entry split across two disbursements), and the totals, the traces and
reconcile's funds checks must agree with what it disbursed.
"""

from __future__ import annotations

import os

import pytest

from shared.settings import CommonSettings
from tests.e2e.conftest import Stack
from tests.support import eventually, report
from tools import reconcile, simulate
from tools.funds import follow_the_money

ORDERS = 200


@pytest.mark.parametrize("seed", [11, 23, 42])
async def test_a_short_simulation_agrees_with_the_oracle(
    stack: Stack, common_settings: CommonSettings, seed: int
) -> None:
    args = simulate.parse_args(
        [
            "--orders", str(ORDERS), "--seed", str(seed), "--sellers", "12",
            "--concurrency", "8", "--small-order-share", "0.2", "--drain-timeout", "45",
            "--posting-wait", "60", "--quiet", "--orders-url", stack.orders,
            "--donations-url", stack.donations, "--charities-url", stack.charities,
        ]
    )  # fmt: skip
    sim = simulate.Simulation(args, os.environ["GFG_JWT_SECRET"])
    try:
        await sim.setup()
        await sim.stream()
        totals_ok = await sim.verify()
        funds = await follow_the_money(sim) if totals_ok else None
    finally:
        await sim.client.aclose()

    dbs = {s: os.environ[f"GFG_{s.upper()}_DB"] for s in ("orders", "donations", "charities")}
    prefix = f"sim-{sim.run_id}-"
    if totals_ok:  # drained: the ledger is final, or about to be
        result = await eventually(
            lambda: reconcile.reconcile(common_settings, dbs, prefix),
            lambda r: not r.differences,
            within=30,
            interval=1,
        )
    else:  # verify already waited out its deadline: name the orders that differ
        result = await reconcile.reconcile(common_settings, dbs, prefix)
    capped = sim.expected().capped
    report(
        f"simulation seed {seed}: "
        + ", ".join(f"{k}={v}" for k, v in sorted(sim.counts.items()) if "retries" not in k)
        + f"; {capped} accruals capped at the order total, {result.ledger_entries} ledger"
        f" entries, {len(result.differences)} differences"
    )
    if funds is not None:
        report(f"simulation seed {seed} {funds.summary()}")
    assert sim.counts["orders"] == ORDERS
    assert capped > 0, "no accrual was capped at its order's total"
    assert totals_ok, f"totals differ from the oracle's; reconcile: {result.differences[:20]}"
    assert result.differences == []
    assert result.orders > ORDERS // 2
    assert funds is not None
    assert funds.problems == []
    assert funds.skipped is None
    assert funds.disbursements > 0
    assert funds.retries > 0
    assert funds.refused > 0
    assert funds.split_entries > 0
    assert funds.posted_minor > 0
