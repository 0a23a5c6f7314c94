"""The simulator's oracle for charity items and sponsors' matches (``tools.simulate``).

``expected_matched`` claims bounds on a campaign's matched total whatever order the
donations consumer processes accruals and refunds in; the property below plays a budget
out in a random order (a model of the contract, not of the service) and checks the claim.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tools.reconcile import check_campaigns
from tools.simulate import (
    CampaignPlan,
    OrderPlan,
    RuleVersion,
    campaign_matches,
    donation_for,
    expected_matched,
    match_for,
    net_after_refunds,
)

EPOCH = datetime(2031, 1, 1, tzinfo=UTC)
PROJECT = "00000000-0000-4000-8000-000000000002"


def campaign(**fields: object) -> CampaignPlan:
    base: dict[str, object] = {
        "campaign_id": "c",
        "project_id": PROJECT,
        "ratio_bp": 0,
        "per_item_minor": 0,
        "per_order_cap_minor": None,
        "budget_minor": 1_000,
        "starts_at": EPOCH,
        "ends_at": EPOCH + timedelta(days=1),
    }
    base.update(fields)
    return CampaignPlan(**base)  # type: ignore[arg-type]


def test_the_contracts_examples() -> None:
    items_only = RuleVersion(EPOCH, PROJECT, "fixed", amount_minor=0, per_item={"tea": 30})
    assert donation_for(items_only, 5_000, [("tea", 2), ("cup", 1), ("tea", 1)]) == 90
    assert donation_for(items_only, 50, [("tea", 2)]) == 50  # capped at the order total
    percent = RuleVersion(EPOCH, PROJECT, "percent", basis_points=100, per_item={"tea": 30})
    # 1 % of 10000 = 100, plus 2 * 30; a partial refund of half leaves the item part
    assert net_after_refunds(percent, 10_000, [5_000], [("tea", 2)]) == 50 + 60
    assert net_after_refunds(percent, 10_000, [10_000], [("tea", 2)]) == 0
    fixed = RuleVersion(EPOCH, PROJECT, "fixed", amount_minor=20, per_item={"tea": 30})
    assert net_after_refunds(fixed, 10_000, [9_999], [("tea", 1)]) == 50
    # 1:1 ratio, 3 per unit, capped at 100
    c = campaign(ratio_bp=10_000, per_item_minor=3, per_order_cap_minor=100)
    assert match_for(c, 40, 5) == 55
    assert match_for(c, 90, 5) == 100
    assert match_for(c, 0, 5) == 0  # no accrual, no match
    assert match_for(campaign(ratio_bp=5_000), 5, 0) == 3  # 2.5 rounds half up


def test_which_orders_a_campaign_matches() -> None:
    c = campaign(sellers=frozenset({"s1"}))
    order = OrderPlan("o", "s1", "CNY", 100, EPOCH)
    assert campaign_matches(c, PROJECT, order)
    assert not campaign_matches(c, "another", order)
    assert not campaign_matches(c, PROJECT, OrderPlan("o", "s2", "CNY", 100, EPOCH))
    late = OrderPlan("o", "s1", "CNY", 100, EPOCH + timedelta(days=1))  # ends_at excluded
    assert not campaign_matches(c, PROJECT, late)
    early = OrderPlan("o", "s1", "CNY", 100, EPOCH - timedelta(microseconds=1))
    assert not campaign_matches(c, PROJECT, early)


@given(
    st.lists(st.integers(0, 10**6), max_size=8),
    st.lists(st.integers(0, 10**6), max_size=8),
    st.integers(0, 10**6),
    st.integers(0, 500),
    st.sampled_from(["fixed", "percent"]),
)
def test_item_part_is_reversed_only_by_a_full_refund(
    quantities: list[int], refunds: list[int], total: int, amount: int, mode: str
) -> None:
    rule = RuleVersion(EPOCH, PROJECT, mode, amount_minor=amount, basis_points=amount,
                       per_item={"i": 7})  # fmt: skip
    items = [("i", q) for q in quantities]
    accrual = donation_for(rule, total, items)
    refunded, totals = 0, []
    for r in refunds:
        refunded = min(total, refunded + r)
        totals.append(refunded)
    net = net_after_refunds(rule, total, totals, items)
    assert 0 <= net <= accrual <= max(0, total)
    if totals and totals[-1] >= total and mode == "fixed":
        assert net == 0
    uncapped = accrual < total or total == 0
    if uncapped and not (totals and totals[-1] >= total):
        assert net >= min(accrual, 7 * sum(quantities))  # the item part stays


@given(
    st.lists(
        st.tuples(st.integers(1, 500), st.sampled_from(["none", "none", "partial", "full"])),
        max_size=25,
    ),
    st.integers(1, 3_000),
    st.randoms(use_true_random=False),
)
def test_matched_total_lies_within_the_bounds_in_any_processing_order(
    asks: list[tuple[int, str]], budget: int, rng: random.Random
) -> None:
    # Events: each order's accrual, and later its refund; any interleaving that keeps an
    # order's refund after its accrual (one partition per order key).
    events = [("accrual", n) for n in range(len(asks))]
    rng.shuffle(events)
    for n, (_, refund) in enumerate(asks):
        if refund != "none":
            after = next(i for i, e in enumerate(events) if e == ("accrual", n))
            events.insert(rng.randint(after + 1, len(events)), ("refund", n))
    matched, got = 0, [0] * len(asks)
    for kind, n in events:
        ask, refund = asks[n]
        if kind == "accrual":
            got[n] = min(ask, budget - matched)
        elif refund == "full":
            got[n], matched = 0, matched - got[n]
            continue
        else:  # a partial refund reverses some share of the match, rounded either way
            back = rng.randint(0, got[n])
            got[n], matched = got[n] - back, matched - back
            continue
        matched += got[n]
        assert 0 <= matched <= budget
    bounds = expected_matched(budget, asks)
    assert bounds.lower <= matched <= bounds.upper
    if all(refund == "none" for _, refund in asks):
        assert bounds.exact
        assert matched == bounds.lower == min(budget, sum(a for a, _ in asks))


def test_reconcile_names_campaign_differences() -> None:
    ledger = [
        {"kind": "match", "campaign_id": "a", "order_id": "o1", "amount_minor": 40},
        {"kind": "match", "campaign_id": "a", "order_id": "o2", "amount_minor": 30},
        {"kind": "match_reversal", "campaign_id": "a", "order_id": "o1", "amount_minor": 40},
        {"kind": "match", "campaign_id": "b", "order_id": "o1", "amount_minor": 5},
        {"kind": "match", "campaign_id": "b", "order_id": "o1", "amount_minor": 5},
        {"kind": "match", "campaign_id": "gone", "order_id": "o3", "amount_minor": 1},
        {"kind": "accrual", "campaign_id": None, "order_id": "o1", "amount_minor": 80},
    ]
    campaigns = [
        {"campaign_id": "a", "budget_minor": 50, "matched_minor": 30},
        {"campaign_id": "b", "budget_minor": 8, "matched_minor": 10},
    ]
    assert check_campaigns(campaigns, ledger) == [
        "campaign b: matched 10 outside [0, 8]",
        "campaign gone: ledger matches 1, no campaign",
        "order o1: 2 matches of campaign b",
    ]
    campaigns[0]["matched_minor"] = 70
    assert check_campaigns(campaigns, ledger)[0] == (
        "campaign a: matched_minor 70, ledger matches minus match reversals 30"
    )
