"""Sponsor matching (services/donations/matching.py), exhaustively (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.donations.ledger import AccrualFacts, NewEntry
from services.donations.matching import (
    Campaign,
    campaign_status,
    match_amount,
    match_reversal_amount,
    plan_matches,
)
from services.donations.rules import entry_id, refund_key

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PROJECT = uuid.UUID("00000000-0000-4000-8000-000000000003")
OTHER = uuid.UUID("00000000-0000-4000-8000-000000000004")


def campaign(
    cid: str = "c1",
    *,
    ratio_bp: int = 10_000,
    per_item_minor: int = 0,
    cap: int | None = None,
    budget: int = 1_000,
    matched: int = 0,
    starts_at: datetime = EPOCH,
    ends_at: datetime = EPOCH + timedelta(days=30),
    sellers: tuple[str, ...] | None = None,
    closed_at: datetime | None = None,
    project: uuid.UUID = PROJECT,
) -> Campaign:
    return Campaign(
        campaign_id=cid,
        sponsor="Sponsor",
        project_id=project,
        ratio_bp=ratio_bp,
        per_item_minor=per_item_minor,
        per_order_cap_minor=cap,
        budget_minor=budget,
        currency="CNY",
        starts_at=starts_at,
        ends_at=ends_at,
        sellers=sellers,
        closed_at=closed_at,
        matched_minor=matched,
    )


def accrual(order_id: str, amount: int, seller: str = "s1") -> NewEntry:
    return NewEntry(
        entry_id=entry_id(order_id, "accrual"),
        order_id=order_id,
        event_key="accrual",
        seller_id=seller,
        project_id=PROJECT,
        kind="accrual",
        amount_minor=amount,
        currency="CNY",
        rule_version=1,
        event_id=uuid.uuid4(),
    )


def reversal(order_id: str, refund_id: str, amount: int) -> NewEntry:
    key = refund_key(refund_id)
    return accrual(order_id, amount)._replace(
        entry_id=entry_id(order_id, key), event_key=key, kind="reversal"
    )


def facts(*entries: NewEntry, units: int = 1, at: datetime = EPOCH) -> dict[str, AccrualFacts]:
    return {e.entry_id: AccrualFacts(at, units) for e in entries}


def test_the_last_match_is_partial_and_then_the_campaign_is_exhausted() -> None:
    c = campaign(budget=250)
    entries = [accrual("o1", 100), accrual("o2", 100), accrual("o3", 100), accrual("o4", 100)]
    plan = plan_matches(entries, facts(*entries), {}, [c], {})
    assert [(e.order_id, e.kind, e.amount_minor) for e in plan.entries] == [
        ("o1", "match", 100),
        ("o2", "match", 100),
        ("o3", "match", 50),
    ]
    assert plan.deltas == {"c1": 250}
    assert all(e.campaign_id == "c1" and e.rule_version is None for e in plan.entries)
    assert plan.entries[0].event_key == "match:c1"
    now = EPOCH + timedelta(days=1)
    assert campaign_status(c, now) == "active"
    assert campaign_status(campaign(budget=250, matched=250), now) == "exhausted"


def test_ratio_per_item_and_cap() -> None:
    c = campaign(ratio_bp=5_000, per_item_minor=3, cap=40)
    assert match_amount(c, 25, 2) == 13 + 6  # 12.5 half up, plus 2 units
    assert match_amount(c, 100, 10) == 40


def test_campaigns_match_in_start_order_and_by_window_seller_and_close() -> None:
    late = campaign("a-late", starts_at=EPOCH + timedelta(days=1), budget=10)
    early = campaign("z-early", budget=10)
    only_s2 = campaign("s2-only", sellers=("s2",))
    closed = campaign("closed", closed_at=EPOCH)
    other = campaign("other", project=OTHER)
    e = accrual("o1", 100)
    plan = plan_matches(
        [e], facts(e, at=EPOCH + timedelta(days=2)), {}, [late, only_s2, closed, other, early], {}
    )
    assert [x.campaign_id for x in plan.entries] == ["z-early", "a-late"]
    before = plan_matches([e], facts(e, at=EPOCH - timedelta(seconds=1)), {}, [early], {})
    assert before.entries == []
    at_end = plan_matches([e], facts(e, at=early.ends_at), {}, [early], {})
    assert at_end.entries == []


def test_reversal_in_proportion_and_a_full_refund_takes_all() -> None:
    c = campaign(budget=10_000, matched=0)
    a = accrual("o1", 300)
    r1 = reversal("o1", "r1", 100)
    r2 = reversal("o1", "r2", 200)
    plan = plan_matches([a, r1, r2], facts(a), {r1.entry_id: 300, r2.entry_id: 200}, [c], {})
    assert [(x.kind, x.amount_minor, x.event_key) for x in plan.entries] == [
        ("match", 300, "match:c1"),
        ("match_reversal", 100, "match_reversal:c1:r1"),
        ("match_reversal", 200, "match_reversal:c1:r2"),
    ]
    assert plan.deltas == {"c1": 0}


def test_a_reversal_from_an_earlier_batch_gives_budget_back() -> None:
    c = campaign(budget=100, matched=100)
    r = reversal("o1", "r1", 10)
    plan = plan_matches([r], {}, {r.entry_id: 30}, [c], {"o1": {"c1": 60}})
    assert [(x.kind, x.amount_minor) for x in plan.entries] == [("match_reversal", 20)]
    assert plan.deltas == {"c1": -20}
    # and the budget given back is matched again in the same batch
    a = accrual("o2", 50)
    plan = plan_matches([r, a], facts(a), {r.entry_id: 30}, [c], {"o1": {"c1": 60}})
    assert [(x.kind, x.amount_minor) for x in plan.entries] == [
        ("match_reversal", 20),
        ("match", 20),
    ]


@given(
    budget=st.integers(min_value=1, max_value=10_000),
    matched=st.integers(min_value=0, max_value=10_000),
    ratio=st.integers(min_value=0, max_value=30_000),
    per_item=st.integers(min_value=0, max_value=100),
    cap=st.none() | st.integers(min_value=0, max_value=5_000),
    orders=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=5_000),
            st.integers(min_value=0, max_value=20),
            st.lists(st.integers(min_value=1, max_value=100), max_size=3),
        ),
        max_size=12,
    ),
)
def test_budget_never_exceeded_and_reversals_never_exceed_matches(
    budget: int,
    matched: int,
    ratio: int,
    per_item: int,
    cap: int | None,
    orders: list[tuple[int, int, list[int]]],
) -> None:
    c = campaign(
        ratio_bp=ratio or 1,
        per_item_minor=per_item,
        cap=cap,
        budget=budget,
        matched=min(matched, budget),
    )
    recorded: list[NewEntry] = []
    accruals: dict[str, AccrualFacts] = {}
    net_before: dict[str, int] = {}
    for n, (amount, units, cuts) in enumerate(orders):
        a = accrual(f"o{n}", amount)
        recorded.append(a)
        accruals[a.entry_id] = AccrualFacts(EPOCH, units)
        net = amount
        for k, pct in enumerate(sorted(cuts)):
            cut = min(net, max(1, amount * pct // 100 - (amount - net)))
            if cut <= 0:
                continue
            r = reversal(f"o{n}", f"r{k}", cut)
            net_before[r.entry_id] = net
            recorded.append(r)
            net -= cut
    plan = plan_matches(recorded, accruals, net_before, [c], {})
    running = c.matched_minor
    per_order: dict[str, int] = {}
    for e in plan.entries:
        sign = 1 if e.kind == "match" else -1
        running += sign * e.amount_minor
        per_order[e.order_id] = per_order.get(e.order_id, 0) + sign * e.amount_minor
        assert e.amount_minor > 0
        assert 0 <= running <= budget
        assert per_order[e.order_id] >= 0
    assert running - c.matched_minor == plan.deltas.get("c1", 0)
    for n, (amount, _units, _cuts) in enumerate(orders):
        left = sum(
            e.amount_minor if e.kind == "match" else -e.amount_minor
            for e in plan.entries
            if e.order_id == f"o{n}"
        )
        seller_net = amount - sum(
            e.amount_minor for e in recorded if e.order_id == f"o{n}" and e.kind == "reversal"
        )
        if seller_net == 0:
            assert left == 0  # a refund to 0 reverses all of the match


@given(
    left=st.integers(min_value=0, max_value=10**9),
    net=st.integers(min_value=1, max_value=10**9),
    data=st.data(),
)
def test_match_reversal_amount_is_bounded(left: int, net: int, data: st.DataObject) -> None:
    r = data.draw(st.integers(min_value=0, max_value=net))
    amount = match_reversal_amount(left, r, net)
    assert 0 <= amount <= left
    if r == net:
        assert amount == left


def test_status() -> None:
    c = campaign(starts_at=EPOCH + timedelta(days=1), ends_at=EPOCH + timedelta(days=2))
    assert campaign_status(c, EPOCH) == "scheduled"
    assert campaign_status(c, EPOCH + timedelta(days=1)) == "active"
    assert campaign_status(c, EPOCH + timedelta(days=2)) == "ended"
    assert campaign_status(campaign(closed_at=EPOCH), EPOCH) == "ended"


def test_a_full_refund_takes_the_whole_match_even_if_the_seller_keeps_a_minimum() -> None:
    # a percent rule with min_minor keeps the minimum after a full refund; the match goes
    c = campaign(budget=1_000, matched=80)
    r = reversal("o1", "r1", 30)
    partial = plan_matches([r], {}, {r.entry_id: 40}, [c], {"o1": {"c1": 80}})
    assert [x.amount_minor for x in partial.entries] == [60]
    full = plan_matches([r], {}, {r.entry_id: 40}, [c], {"o1": {"c1": 80}}, {r.entry_id})
    assert [x.amount_minor for x in full.entries] == [80]
    assert full.deltas == {"c1": -80}
