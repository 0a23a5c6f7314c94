"""The donation arithmetic and batch planning, exhaustively (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from services.donations.ledger import NewEntry, OrderLedger, OrderMoneyEvent, plan_batch
from services.donations.rules import (
    OrderFacts,
    Outcome,
    RuleVersion,
    apply_rule,
    compute_donation,
    percent_amount,
    refund_reversal,
    rule_at,
)
from shared.events import OrderCompleted, OrderItem, OrderRefunded, OrderSnapshot

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PROJECT = uuid.UUID("00000000-0000-4000-8000-000000000001")
MAX_TOTAL = 10**12

totals = st.integers(min_value=0, max_value=MAX_TOTAL)
amounts = st.integers(min_value=0, max_value=10**9)


def make_rule(
    *,
    version: int = 1,
    mode: str = "percent",
    amount_minor: int | None = None,
    basis_points: int | None = None,
    min_minor: int | None = None,
    max_minor: int | None = None,
    currency: str = "CNY",
    active: bool = True,
    effective_from: datetime = EPOCH,
    seller_id: str = "s1",
) -> RuleVersion:
    assert mode in ("fixed", "percent")
    return RuleVersion(
        seller_id=seller_id,
        version=version,
        project_id=PROJECT,
        mode="fixed" if mode == "fixed" else "percent",
        amount_minor=amount_minor,
        basis_points=basis_points,
        min_minor=min_minor,
        max_minor=max_minor,
        currency=currency,
        active=active,
        effective_from=effective_from,
    )


@st.composite
def rules(draw: st.DrawFn, version: int = 1, effective_from: datetime = EPOCH) -> RuleVersion:
    mode = draw(st.sampled_from(["fixed", "percent"]))
    if mode == "fixed":
        return make_rule(
            version=version,
            mode="fixed",
            amount_minor=draw(st.integers(min_value=1, max_value=10**6)),
            effective_from=effective_from,
            active=draw(st.booleans()),
        )
    low = draw(st.none() | amounts)
    high = draw(st.none() | amounts)
    if low is not None and high is not None and low > high:
        low, high = high, low
    return make_rule(
        version=version,
        basis_points=draw(st.integers(min_value=1, max_value=10_000)),
        min_minor=low,
        max_minor=high,
        effective_from=effective_from,
        active=draw(st.booleans()),
    )


@st.composite
def histories(draw: st.DrawFn) -> list[RuleVersion]:
    gaps = draw(st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))
    history: list[RuleVersion] = []
    at = EPOCH
    for version, gap in enumerate(gaps, start=1):
        at += timedelta(seconds=gap)
        history.append(draw(rules(version=version, effective_from=at)))
    return history


def half_up(total: int, basis_points: int) -> int:
    exact = Fraction(total * basis_points, 10_000)
    return int(exact + Fraction(1, 2)) if exact >= 0 else 0


# --- apply_rule --------------------------------------------------------------------------


@given(rule=rules(), total=totals)
def test_amount_is_never_negative_nor_above_the_total(rule: RuleVersion, total: int) -> None:
    amount = apply_rule(rule, total)
    assert 0 <= amount <= total


@given(total=totals, bp=st.integers(min_value=1, max_value=10_000))
def test_percent_rounds_half_up(total: int, bp: int) -> None:
    assert apply_rule(make_rule(basis_points=bp), total) == min(total, half_up(total, bp))


def test_percent_rounding_examples() -> None:
    # 0.5 % of 1.00 CNY = 0.5 fen -> 1 fen; of 0.99 CNY = 0.495 fen -> 0 fen
    assert apply_rule(make_rule(basis_points=50), 100) == 1
    assert apply_rule(make_rule(basis_points=50), 99) == 0
    assert apply_rule(make_rule(basis_points=50), 300) == 2  # 1.5 -> 2
    assert apply_rule(make_rule(basis_points=50), 500) == 3  # 2.5 -> 3 (half up, not even)


@given(
    total=totals,
    bp=st.integers(min_value=1, max_value=10_000),
    low=st.none() | amounts,
    high=st.none() | amounts,
)
def test_percent_caps_are_respected(total: int, bp: int, low: int | None, high: int | None) -> None:
    if low is not None and high is not None and low > high:
        low, high = high, low
    amount = apply_rule(make_rule(basis_points=bp, min_minor=low, max_minor=high), total)
    expected = half_up(total, bp)
    if low is not None:
        expected = max(expected, low)
    if high is not None:
        expected = min(expected, high)
    assert amount == (min(expected, total) if total > 0 else 0)
    if high is not None:
        assert amount <= high
    if low is not None:
        assert amount >= min(low, total)


@given(total=totals, fixed=st.integers(min_value=1, max_value=10**6))
def test_fixed_is_the_amount_up_to_the_total(total: int, fixed: int) -> None:
    assert apply_rule(make_rule(mode="fixed", amount_minor=fixed), total) == min(fixed, total)


# --- rule_at / compute_donation ------------------------------------------------------------


@given(history=histories(), offset=st.integers(min_value=-100, max_value=70_000))
def test_the_version_in_effect_at_placed_at_wins(history: list[RuleVersion], offset: int) -> None:
    at = EPOCH + timedelta(seconds=offset)
    in_effect = [rule for rule in history if rule.effective_from <= at]
    expected = in_effect[-1] if in_effect else None
    assert rule_at(history, at) == expected


@given(history=histories(), offset=st.integers(min_value=-100, max_value=70_000), total=totals)
def test_compute_donation(history: list[RuleVersion], offset: int, total: int) -> None:
    at = EPOCH + timedelta(seconds=offset)
    decision = compute_donation(OrderFacts("CNY", total, at), history)
    rule = rule_at(history, at)
    assert decision.rule == rule
    assert 0 <= decision.amount_minor <= total
    if rule is None:
        assert decision.outcome is Outcome.NO_RULE
    elif not rule.active:
        assert (decision.outcome, decision.amount_minor) == (Outcome.INACTIVE, 0)
    else:
        assert decision.amount_minor == apply_rule(rule, total)
        expected = Outcome.DONATED if decision.amount_minor else Outcome.ZERO
        assert decision.outcome is expected


def test_placed_under_v1_completed_under_v2_uses_v1() -> None:
    v1 = make_rule(version=1, mode="fixed", amount_minor=2, effective_from=EPOCH)
    v2 = make_rule(
        version=2, mode="fixed", amount_minor=9, effective_from=EPOCH + timedelta(hours=1)
    )
    placed = EPOCH + timedelta(minutes=30)
    decision = compute_donation(OrderFacts("CNY", 1000, placed), [v1, v2])
    assert (decision.amount_minor, decision.rule) == (2, v1)
    at_change = compute_donation(OrderFacts("CNY", 1000, v2.effective_from), [v1, v2])
    assert at_change.rule == v2
    before_any = compute_donation(OrderFacts("CNY", 1000, EPOCH - timedelta(seconds=1)), [v1])
    assert before_any.outcome is Outcome.NO_RULE


@given(rule=rules(), total=totals, currency=st.sampled_from(["USD", "JPY", "EUR"]))
def test_currency_mismatch_donates_nothing(rule: RuleVersion, total: int, currency: str) -> None:
    decision = compute_donation(OrderFacts(currency, total, EPOCH), [rule])
    assert decision.amount_minor == 0
    expected = Outcome.CURRENCY_MISMATCH if rule.active else Outcome.INACTIVE
    assert decision.outcome is expected


# --- refunds ---------------------------------------------------------------------------------


@given(rule=rules(), total=totals, data=st.data())
def test_refunds_never_take_the_net_below_zero(
    rule: RuleVersion, total: int, data: st.DataObject
) -> None:
    net = apply_rule(rule, total)
    refunded = 0
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=total), max_size=5))
    for refunded_total in sorted(cuts) + [total]:
        reversal = refund_reversal(rule, total, refunded_total, net)
        assert 0 <= reversal <= net
        net -= reversal
        refunded = refunded_total
        if rule.mode == "percent":
            # no second cap at what the refund leaves: the rule (with its min) applies as is
            assert net == min(apply_rule(rule, total), percent_amount(rule, total - refunded))
        else:
            assert net == (0 if refunded >= total else apply_rule(rule, total))
    # a full refund leaves the rule applied to 0: nothing, unless the rule has a minimum
    assert net == (
        min(apply_rule(rule, total), rule.min_minor or 0) if rule.mode == "percent" else 0
    )


@given(
    total=st.integers(min_value=1, max_value=MAX_TOTAL),
    bp=st.integers(min_value=1, max_value=10_000),
    data=st.data(),
)
def test_percent_partial_refund_reverses_the_difference(
    total: int, bp: int, data: st.DataObject
) -> None:
    rule = make_rule(basis_points=bp)
    refunded = data.draw(st.integers(min_value=0, max_value=total))
    net = apply_rule(rule, total)
    assert refund_reversal(rule, total, refunded, net) == net - apply_rule(rule, total - refunded)


def test_fixed_partial_refund_reverses_nothing() -> None:
    rule = make_rule(mode="fixed", amount_minor=2)
    assert refund_reversal(rule, 1000, 999, 2) == 0
    assert refund_reversal(rule, 1000, 1000, 2) == 2
    assert refund_reversal(rule, 1000, 1000, 0) == 0


# --- plan_batch ------------------------------------------------------------------------------


def completed(order_id: str, total: int, placed_at: datetime = EPOCH) -> OrderCompleted:
    return OrderCompleted(
        order=OrderSnapshot(
            order_id=order_id,
            seller_id="s1",
            currency="CNY",
            total_minor=total,
            items=[OrderItem(item_id="i", quantity=1, unit_price_minor=total)],
            placed_at=placed_at,
            completed_at=placed_at,
        )
    )


def refunded(order_id: str, refund_id: str, total: int, refunded_total: int) -> OrderRefunded:
    return OrderRefunded(
        order_id=order_id,
        seller_id="s1",
        refund_id=refund_id,
        amount_minor=refunded_total,
        refunded_total_minor=refunded_total,
        total_minor=total,
        currency="CNY",
        placed_at=EPOCH,
        occurred_at=EPOCH,  # inside the return window
    )


def test_completed_then_refunded_in_one_batch() -> None:
    rule = make_rule(basis_points=100)
    events: list[OrderMoneyEvent] = [
        completed("o1", 10_000),
        refunded("o1", "r1", 10_000, 4_000),
        refunded("o1", "r2", 10_000, 10_000),
    ]
    plan = plan_batch(events, {"s1": [rule]}, {})
    assert [(e.kind, e.amount_minor, e.event_key) for e in plan.entries] == [
        ("accrual", 100, "accrual"),
        ("reversal", 40, "refund:r1"),
        ("reversal", 60, "refund:r2"),
    ]
    assert plan.outcomes[("order.completed", "donated")] == 1
    assert plan.outcomes[("order.refunded", "reversed")] == 2


def test_refund_without_donation_records_nothing() -> None:
    plan = plan_batch([refunded("o9", "r1", 100, 100)], {"s1": []}, {})
    assert plan.entries == []
    assert plan.outcomes[("order.refunded", "no_donation")] == 1


@given(
    rule=rules(),
    orders=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**7),
            st.lists(st.integers(min_value=0, max_value=100), max_size=3),
        ),
        min_size=1,
        max_size=8,
    ),
    data=st.data(),
)
def test_any_split_and_any_redelivery_gives_the_same_ledger(
    rule: RuleVersion, orders: list[tuple[int, list[int]]], data: st.DataObject
) -> None:
    events: list[OrderMoneyEvent] = []
    for n, (total, cuts) in enumerate(orders):
        events.append(completed(f"o{n}", total))
        for k, pct in enumerate(sorted(cuts)):
            events.append(refunded(f"o{n}", f"r{k}", total, total * pct // 100))
    histories = {"s1": [rule]}
    once = plan_batch(events, histories, {}).entries

    # Split into batches; each batch may be delivered twice (crash before offset commit).
    split = data.draw(st.lists(st.integers(min_value=0, max_value=len(events)), max_size=4))
    bounds = [0, *sorted(split), len(events)]
    ledger: list[NewEntry] = []
    ledgers: dict[str, OrderLedger] = {}
    for start, end in zip(bounds, bounds[1:], strict=False):
        batch = events[start:end]
        for _ in range(data.draw(st.integers(min_value=1, max_value=2))):
            plan = plan_batch(batch, histories, ledgers)
            ledger += plan.entries
    assert ledger == once
    for entry in once:
        assert entry.amount_minor > 0
    for n, (total, _) in enumerate(orders):
        net = sum(
            e.amount_minor if e.kind == "accrual" else -e.amount_minor
            for e in once
            if e.order_id == f"o{n}"
        )
        assert 0 <= net <= total
