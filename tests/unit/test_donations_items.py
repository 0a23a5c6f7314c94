"""Charity items (``per_item``) in the donation arithmetic, exhaustively (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from services.donations.ledger import OrderMoneyEvent, plan_batch
from services.donations.rules import (
    OrderFacts,
    Outcome,
    RuleVersion,
    apply_rule,
    compute_donation,
    item_amount,
    refund_reversal,
)
from shared.events import OrderCompleted, OrderItem, OrderRefunded, OrderSnapshot

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PROJECT = uuid.UUID("00000000-0000-4000-8000-000000000002")
ITEM_IDS = ["tea", "cup", "pot", "mat"]


def make_rule(
    mode: str, amount: int | None, bp: int | None, per_item: dict[str, int]
) -> RuleVersion:
    return RuleVersion(
        seller_id="s1",
        version=1,
        project_id=PROJECT,
        mode="fixed" if mode == "fixed" else "percent",
        amount_minor=amount if mode == "fixed" else None,
        basis_points=bp if mode == "percent" else None,
        min_minor=None,
        max_minor=None,
        currency="CNY",
        active=True,
        effective_from=EPOCH,
        per_item=per_item,
    )


@st.composite
def item_rules(draw: st.DrawFn) -> RuleVersion:
    mode = draw(st.sampled_from(["fixed", "percent"]))
    per_item = draw(
        st.dictionaries(
            st.sampled_from(ITEM_IDS[:3]), st.integers(min_value=0, max_value=10**6), max_size=3
        )
    )
    return make_rule(
        mode,
        draw(st.integers(min_value=0, max_value=10**6)),
        draw(st.integers(min_value=1, max_value=10_000)),
        per_item,
    )


order_items = st.lists(
    st.tuples(st.sampled_from(ITEM_IDS), st.integers(min_value=1, max_value=50)), max_size=6
)
totals = st.integers(min_value=0, max_value=10**9)


@given(rule=item_rules(), total=totals, items=order_items)
def test_never_negative_never_above_the_total(
    rule: RuleVersion, total: int, items: list[tuple[str, int]]
) -> None:
    decision = compute_donation(OrderFacts("CNY", total, EPOCH, items), [rule])
    assert 0 <= decision.amount_minor <= total
    assert 0 <= decision.item_minor <= decision.amount_minor


@given(rule=item_rules(), total=totals, items=order_items)
def test_item_part_is_the_sum_over_listed_items_before_the_cap(
    rule: RuleVersion, total: int, items: list[tuple[str, int]]
) -> None:
    expected_items = sum(rule.per_item[i] * q for i, q in items if i in rule.per_item)
    assert item_amount(rule, items) == expected_items
    decision = compute_donation(OrderFacts("CNY", total, EPOCH, items), [rule])
    assert decision.amount_minor == min(apply_rule(rule, total) + expected_items, total)
    assert decision.outcome is (Outcome.DONATED if decision.amount_minor else Outcome.ZERO)


def test_unlisted_items_donate_nothing_and_the_cap_is_the_order_total() -> None:
    rule = make_rule("fixed", 0, None, {"tea": 30})
    assert compute_donation(OrderFacts("CNY", 1000, EPOCH, [("cup", 9)]), [rule]).amount_minor == 0
    both = compute_donation(
        OrderFacts("CNY", 1000, EPOCH, [("tea", 2), ("cup", 1), ("tea", 1)]), [rule]
    )
    assert (both.amount_minor, both.item_minor) == (90, 90)
    capped = compute_donation(OrderFacts("CNY", 100, EPOCH, [("tea", 5)]), [rule])
    assert (capped.amount_minor, capped.item_minor) == (100, 100)


@given(
    rule=item_rules(),
    total=st.integers(min_value=1, max_value=10**9),
    items=order_items,
    data=st.data(),
)
def test_refunds_never_reverse_more_than_accrued_and_items_only_on_a_full_refund(
    rule: RuleVersion, total: int, items: list[tuple[str, int]], data: st.DataObject
) -> None:
    decision = compute_donation(OrderFacts("CNY", total, EPOCH, items), [rule])
    net, item = decision.amount_minor, decision.item_minor
    reversed_total = 0
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=total - 1), max_size=4))
    for refunded_total in sorted(cuts):
        reversal = refund_reversal(rule, total, refunded_total, net, item)
        assert 0 <= reversal <= net
        net -= reversal
        reversed_total += reversal
        assert net >= item  # a partial refund never touches the item part
    full = refund_reversal(rule, total, total, net, item)
    assert full == net  # min/max are None here: a full refund reverses everything
    assert reversed_total + full == decision.amount_minor


def completed(order_id: str, total: int, items: list[tuple[str, int]]) -> OrderCompleted:
    return OrderCompleted(
        order=OrderSnapshot(
            order_id=order_id,
            seller_id="s1",
            currency="CNY",
            total_minor=total,
            items=[OrderItem(item_id=i, quantity=q, unit_price_minor=1) for i, q in items],
            placed_at=EPOCH,
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
    )


def test_percent_with_items_partial_then_full_refund() -> None:
    rule = make_rule("percent", None, 1000, {"tea": 7})
    events: list[OrderMoneyEvent] = [
        completed("o1", 10_000, [("tea", 3), ("cup", 1)]),
        refunded("o1", "r1", 10_000, 5_000),
        refunded("o1", "r2", 10_000, 10_000),
    ]
    plan = plan_batch(events, {"s1": [rule]}, {})
    assert [(e.kind, e.amount_minor, e.item_minor) for e in plan.entries] == [
        ("accrual", 1_021, 21),  # 10% of 10_000 + 3 * 7
        ("reversal", 500, None),  # the order part halves; the items stay
        ("reversal", 521, None),  # the full refund takes the rest, items included
    ]
    assert plan.accruals[plan.entries[0].entry_id].units == 4
    assert plan.net_before[plan.entries[1].entry_id] == 1_021
