"""The simulator's oracle: the contract's examples, and agreement with the service's rules.

``tools.simulate`` computes donations from the contract's text with ``Fraction``; the
donations service computes them in ``services.donations.rules`` and ``ledger.plan_batch``.
The property test feeds both the same rule history, order and refunds and compares the
order's net donation.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.donations import rules as service
from services.donations.ledger import OrderMoneyEvent, plan_batch
from shared.events import OrderCompleted, OrderItem, OrderRefunded, OrderSnapshot
from tools.simulate import (
    OrderPlan,
    RuleVersion,
    donation_for,
    expected_net,
    net_after_refunds,
    rule_at,
    within_window,
)

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PROJECT = uuid.UUID("00000000-0000-4000-8000-000000000002")
SELLER = "s1"


def fixed(amount: int) -> RuleVersion:
    return RuleVersion(EPOCH, str(PROJECT), "fixed", amount_minor=amount)


def percent(bp: int, low: int | None = None, high: int | None = None) -> RuleVersion:
    return RuleVersion(
        EPOCH, str(PROJECT), "percent", basis_points=bp, min_minor=low, max_minor=high
    )


def completed_plan(total: int, *refunded_totals: int, currency: str = "CNY") -> OrderPlan:
    return OrderPlan(
        "o1", SELLER, currency, total, EPOCH, completed=True, refunded_totals=list(refunded_totals)
    )


# --- the contract's examples -----------------------------------------------------------------


def test_a_fixed_rule_above_the_order_total_gives_the_total() -> None:
    """Issue 9: fixed 31 on an order of 4 fen is 4 (the old oracle said 31, the ledger 4)."""
    assert donation_for(fixed(31), 4) == 4
    assert expected_net(completed_plan(4), fixed(31), "CNY") == 4
    assert expected_net(completed_plan(4, 3), fixed(31), "CNY") == 4  # partial: nothing back
    assert expected_net(completed_plan(4, 4), fixed(31), "CNY") == 0  # full: all back


def test_percent_rounds_half_up_then_clamps_then_caps_at_the_total() -> None:
    assert donation_for(percent(150), 100) == 2  # 1.5 -> 2
    assert donation_for(percent(149), 100) == 1  # 1.49 -> 1
    assert donation_for(percent(50), 100) == 1  # 0.5 -> 1
    assert donation_for(percent(49), 100) == 0
    assert donation_for(percent(100, low=5), 100) == 5
    assert donation_for(percent(10_000, high=30), 100) == 30
    assert donation_for(percent(100, low=50), 10) == 10  # the cap at the order's total


def test_nothing_without_an_active_rule_in_the_currency_or_a_completed_order() -> None:
    assert expected_net(completed_plan(100), None, "CNY") == 0
    inactive = fixed(5)
    inactive.active = False
    assert expected_net(completed_plan(100), inactive, "CNY") == 0
    assert expected_net(completed_plan(100, currency="USD"), fixed(5), "CNY") == 0
    placed = OrderPlan("o1", SELLER, "CNY", 100, EPOCH)
    assert expected_net(placed, fixed(5), "CNY") == 0


def test_a_percent_refund_moves_the_net_to_the_rule_on_what_is_left() -> None:
    assert net_after_refunds(percent(100), 10_000, [4_000]) == 60
    assert net_after_refunds(percent(100), 10_000, [4_000, 10_000]) == 0
    assert net_after_refunds(percent(100, high=70), 10_000, [4_000]) == 60
    assert net_after_refunds(percent(100, high=50), 10_000, [4_000]) == 50  # nothing reversed


def test_a_percent_refund_has_no_second_cap_and_never_adds() -> None:
    """The cap at the total applies to the accrual only; the rule on what is left is not
    capped again at ``total - refunded``, and a reversal is never negative."""
    rule = percent(100, low=5)
    assert net_after_refunds(rule, 1_000, [998]) == 5  # the rule on 2 is max(0, 5) = 5
    assert net_after_refunds(rule, 1_000, [1_000]) == 5  # the rule on 0 is 5 as well
    assert net_after_refunds(percent(100, low=50), 10, [5]) == 10  # the accrual was capped at 10


# --- the oracle against the service ----------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One drawn rule version, turned into the oracle's and the service's representation."""

    mode: Literal["fixed", "percent"]
    amount_minor: int | None
    basis_points: int | None
    min_minor: int | None
    max_minor: int | None
    active: bool
    currency: str
    seconds: int  # effective_from, after EPOCH

    def oracle(self) -> RuleVersion:
        return RuleVersion(
            effective_from=EPOCH + timedelta(seconds=self.seconds),
            project_id=str(PROJECT),
            mode=self.mode,
            amount_minor=self.amount_minor or 0,
            basis_points=self.basis_points or 0,
            min_minor=self.min_minor,
            max_minor=self.max_minor,
            active=self.active,
        )

    def service(self, version: int) -> service.RuleVersion:
        return service.RuleVersion(
            seller_id=SELLER,
            version=version,
            project_id=PROJECT,
            mode=self.mode,
            amount_minor=self.amount_minor,
            basis_points=self.basis_points,
            min_minor=self.min_minor,
            max_minor=self.max_minor,
            currency=self.currency,
            active=self.active,
            effective_from=EPOCH + timedelta(seconds=self.seconds),
        )


small_or_large = st.integers(0, 60) | st.integers(0, 10**12)


@st.composite
def versions(draw: st.DrawFn, seconds: int) -> Version:
    active = draw(st.sampled_from([True, True, True, False]))
    currency = draw(st.sampled_from(["CNY", "CNY", "CNY", "USD"]))
    if draw(st.booleans()):
        amount = draw(small_or_large)
        return Version("fixed", amount, None, None, None, active, currency, seconds)
    low = draw(st.none() | small_or_large)
    high = draw(st.none() | st.integers(low or 0, 10**12) | st.integers(low or 0, (low or 0) + 60))
    bp = draw(st.integers(0, 10_000))
    return Version("percent", None, bp, low, high, active, currency, seconds)


@st.composite
def histories(draw: st.DrawFn) -> list[Version]:
    """1-3 versions of one seller's rule, oldest first."""
    size = draw(st.integers(1, 3))
    offsets = sorted(draw(st.lists(st.integers(0, 100), min_size=size, max_size=size)))
    return [draw(versions(at)) for at in offsets]


@st.composite
def refund_sequences(draw: st.DrawFn, total: int) -> list[int]:
    """Cumulative refunded totals, strictly increasing, up to the order's total."""
    if total == 0:
        return []
    cuts = draw(st.lists(st.integers(1, total), max_size=4))
    if draw(st.booleans()):
        cuts.append(total)  # ends with a full refund
    return sorted(set(cuts))


def service_net(
    history: Sequence[Version], currency: str, total: int, placed_at: datetime, refunds: list[int]
) -> int:
    """The net the service's pure ledger planning gives after the same events."""
    events: list[OrderMoneyEvent] = [
        OrderCompleted(
            order=OrderSnapshot(
                order_id="o1",
                seller_id=SELLER,
                currency=currency,
                total_minor=total,
                items=[OrderItem(item_id="i", quantity=1, unit_price_minor=total)],
                placed_at=placed_at,
                completed_at=placed_at,
            )
        )
    ]
    previous = 0
    for n, refunded_total in enumerate(refunds):
        events.append(
            OrderRefunded(
                order_id="o1",
                seller_id=SELLER,
                refund_id=f"r{n}",
                amount_minor=refunded_total - previous,
                refunded_total_minor=refunded_total,
                total_minor=total,
                currency=currency,
                placed_at=placed_at,
                occurred_at=placed_at,  # inside the return window
            )
        )
        previous = refunded_total
    rules = [v.service(n) for n, v in enumerate(history, start=1)]
    plan = plan_batch(events, {SELLER: rules}, {})
    return sum(e.amount_minor if e.kind == "accrual" else -e.amount_minor for e in plan.entries)


@settings(max_examples=800, deadline=None)
@given(
    history=histories(),
    currency=st.sampled_from(["CNY", "CNY", "CNY", "USD"]),
    total=st.integers(1, 10) | st.integers(0, 10**12),
    placed=st.integers(0, 120),
    data=st.data(),
)
def test_the_oracle_agrees_with_the_service(
    history: list[Version], currency: str, total: int, placed: int, data: st.DataObject
) -> None:
    refunds = data.draw(refund_sequences(total))
    placed_at = EPOCH + timedelta(seconds=placed)
    oracle_history = [v.oracle() for v in history]
    in_effect = rule_at(oracle_history, placed_at)
    rule_currency = next(
        (v.currency for v, r in zip(history, oracle_history, strict=True) if r is in_effect), ""
    )
    order = OrderPlan("o1", SELLER, currency, total, placed_at, True, refunds)
    oracle = expected_net(order, in_effect, rule_currency)
    assert 0 <= oracle <= total
    assert oracle == service_net(history, currency, total, placed_at, refunds)


@pytest.mark.parametrize(
    ("total", "refunds", "contract"),
    [(1_000, [998], 5), (1_000, [1_000], 5), (10, [3, 9], 5)],
)
def test_no_second_cap_after_a_refund_in_the_service(
    total: int, refunds: list[int], contract: int
) -> None:
    version = Version("percent", None, 100, 5, None, True, "CNY", 0)
    order = OrderPlan("o1", SELLER, "CNY", total, EPOCH, True, refunds)
    assert expected_net(order, version.oracle(), "CNY") == contract
    assert service_net([version], "CNY", total, EPOCH, refunds) == contract


def test_only_refunds_before_available_on_count() -> None:
    """``available_on`` is ``completed_at`` plus the window; a refund at it or later
    reverses nothing, so the oracle drops it (and every later one of the order)."""
    window = timedelta(seconds=5)
    plan = OrderPlan("o", SELLER, "CNY", 1_000, EPOCH, completed=True, completed_at=EPOCH)
    plan.refunded_totals = [100, 1_000]
    plan.refunded_at = [EPOCH + window - timedelta(microseconds=1), EPOCH + window]
    kept = within_window(plan, window)
    assert (kept.refunded_totals, kept.refunded_at) == ([100], plan.refunded_at[:1])
    assert expected_net(kept, fixed(7), "CNY") == 7  # the full refund came too late
    assert expected_net(plan, fixed(7), "CNY") == 0
    assert within_window(plan, None) is plan  # no window known: every refund counts
    assert within_window(plan, timedelta(seconds=6)).refunded_totals == [100, 1_000]
