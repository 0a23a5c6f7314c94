"""The return window in the pure planning and the posting job's safe point (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.donations.ledger import OrderLedger, OrderMoneyEvent, plan_batch
from services.donations.matching import Campaign, plan_matches
from services.donations.posting import UNKNOWN_PARTITION, safe_until
from services.donations.repository import Position
from services.donations.rules import RuleVersion, available_on, refund_in_window
from shared.events import OrderCompleted, OrderItem, OrderRefunded, OrderSnapshot

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
WINDOW = timedelta(days=7)
PROJECT = uuid.UUID("00000000-0000-0000-0000-000000000001")


def rule(mode: str, value: int) -> RuleVersion:
    return RuleVersion(
        seller_id="s1",
        version=1,
        project_id=PROJECT,
        mode="fixed" if mode == "fixed" else "percent",
        amount_minor=value if mode == "fixed" else None,
        basis_points=value if mode == "percent" else None,
        min_minor=None,
        max_minor=None,
        currency="CNY",
        active=True,
        effective_from=EPOCH,
    )


def completed(total: int, completed_at: datetime | None) -> OrderCompleted:
    return OrderCompleted(
        occurred_at=EPOCH + timedelta(seconds=5),
        order=OrderSnapshot(
            order_id="o1",
            seller_id="s1",
            currency="CNY",
            total_minor=total,
            items=[OrderItem(item_id="i", quantity=1, unit_price_minor=total)],
            placed_at=EPOCH,
            completed_at=completed_at,
        ),
    )


def refunded(total: int, refunded_total: int, at: datetime, refund_id: str) -> OrderRefunded:
    return OrderRefunded(
        occurred_at=at,
        order_id="o1",
        seller_id="s1",
        refund_id=refund_id,
        amount_minor=refunded_total,
        refunded_total_minor=refunded_total,
        total_minor=total,
        currency="CNY",
        placed_at=EPOCH,
    )


def test_available_on_runs_from_completed_at_or_the_event() -> None:
    at = EPOCH + timedelta(hours=3)
    [entry] = plan_batch([completed(1000, at)], {"s1": [rule("fixed", 5)]}, {}).entries
    assert entry.available_on == available_on(at, WINDOW) == at + WINDOW
    event = completed(1000, None)  # an event without completed_at: its occurred_at
    [entry] = plan_batch([event], {"s1": [rule("fixed", 5)]}, {}).entries
    assert entry.available_on == event.occurred_at + WINDOW
    short = timedelta(seconds=3)
    [entry] = plan_batch(
        [completed(1000, at)], {"s1": [rule("fixed", 5)]}, {}, window=short
    ).entries
    assert entry.available_on == at + short


@given(
    mode_value=st.sampled_from([("fixed", 7), ("percent", 250), ("percent", 10_000)]),
    total=st.integers(400, 10**9),  # every rule here donates at least 1
    refunded_permille=st.integers(0, 1000),
    offset_s=st.integers(-3600, 2 * 7 * 86_400) | st.integers(7 * 86_400 - 2, 7 * 86_400 + 2),
    preloaded=st.booleans(),
)
def test_a_refund_after_available_on_never_reverses_and_before_reverses_as_ever(
    mode_value: tuple[str, int],
    total: int,
    refunded_permille: int,
    offset_s: int,
    preloaded: bool,
) -> None:
    mode, value = mode_value
    history = {"s1": [rule(mode, value)]}
    done = EPOCH + timedelta(hours=1)
    ends = done + WINDOW
    refunded_total = total * refunded_permille // 1000
    at = done + timedelta(seconds=offset_s)
    refund = refunded(total, refunded_total, at, "r1")
    # the same refund well inside the window: what it reverses "as today"
    inside = refunded(total, refunded_total, done, "r1")

    def reversed_by(event: OrderRefunded) -> int:
        if preloaded:  # the accrual from an earlier batch, loaded from the database
            [accrual] = plan_batch([completed(total, done)], history, {}).entries
            ledgers = {
                "o1": OrderLedger(
                    seller_id="s1",
                    project_id=PROJECT,
                    currency="CNY",
                    rule_version=1,
                    net_minor=accrual.amount_minor,
                    keys={"accrual"},
                    available_on=accrual.available_on,
                )
            }
            plan = plan_batch([event], history, ledgers)
        else:
            events: list[OrderMoneyEvent] = [completed(total, done), event]
            plan = plan_batch(events, history, {})
        return sum(e.amount_minor for e in plan.entries if e.kind == "reversal")

    amount = reversed_by(refund)
    assert refund_in_window(at, ends) is (at < ends)
    if at >= ends:
        assert amount == 0
    else:
        assert amount == reversed_by(inside)


def test_a_refund_for_a_posted_order_reverses_nothing() -> None:
    ledgers = {
        "o1": OrderLedger(
            seller_id="s1",
            project_id=PROJECT,
            currency="CNY",
            rule_version=1,
            net_minor=5,
            keys={"accrual"},
            available_on=EPOCH + WINDOW,
            posted=True,
        )
    }
    plan = plan_batch([refunded(1000, 1000, EPOCH, "r1")], {"s1": [rule("fixed", 5)]}, ledgers)
    assert plan.entries == []
    assert plan.outcomes[("order.refunded", "after_posting")] == 1
    plan = plan_batch(
        [refunded(1000, 1000, EPOCH + WINDOW, "r2")], {"s1": [rule("fixed", 5)]}, ledgers
    )
    assert plan.outcomes[("order.refunded", "after_window")] == 1


T0 = EPOCH + timedelta(days=30)
GRACE = timedelta(seconds=60)


def test_a_caught_up_partition_is_safe_up_to_now_minus_grace() -> None:
    seen = T0 - timedelta(hours=5)
    safe = safe_until(T0, {0: 10, 1: 0}, {0: Position(10, seen)}, GRACE)
    assert safe == {0: T0 - GRACE, 1: T0 - GRACE, UNKNOWN_PARTITION: T0 - GRACE}


def test_a_partition_behind_is_safe_up_to_its_watermark_minus_grace() -> None:
    seen = T0 - timedelta(hours=5)
    safe = safe_until(T0, {0: 11, 1: 3}, {0: Position(10, seen), 1: Position(3, None)}, GRACE)
    assert safe == {0: seen - GRACE, 1: T0 - GRACE, UNKNOWN_PARTITION: seen - GRACE}


def test_a_partition_never_applied_and_not_empty_blocks_only_itself() -> None:
    safe = safe_until(T0, {0: 4, 1: 0}, {}, GRACE)
    assert safe == {1: T0 - GRACE}


@given(
    ends=st.lists(st.integers(0, 50), min_size=1, max_size=6),
    applied=st.lists(st.integers(0, 50), min_size=6, max_size=6),
    seen_s=st.lists(st.none() | st.integers(-(10**6), 10**6), min_size=6, max_size=6),
)
def test_the_safe_point_never_passes_now_minus_grace_unless_events_say_so(
    ends: list[int], applied: list[int], seen_s: list[int | None]
) -> None:
    end_offsets = dict(enumerate(ends))
    positions = {
        p: Position(applied[p], None if s is None else T0 + timedelta(seconds=s))
        for p, s in enumerate(seen_s[: len(ends)])
    }
    safe = safe_until(T0, end_offsets, positions, GRACE)
    for p, until in safe.items():
        if p == UNKNOWN_PARTITION:
            assert until == min(v for k, v in safe.items() if k != UNKNOWN_PARTITION)
            continue
        seen = positions[p].max_occurred_at
        caught_up = positions[p].next_offset >= end_offsets[p]
        # never beyond what was applied or (caught up) the clock, minus the grace
        bounds = [b for b in (seen, T0 if caught_up else None) if b is not None]
        assert until == max(bounds) - GRACE
    for p in end_offsets:
        if positions[p].next_offset < end_offsets[p] and positions[p].max_occurred_at is None:
            assert p not in safe


def _campaign() -> Campaign:
    return Campaign(
        campaign_id="c1",
        sponsor="Sponsor",
        project_id=PROJECT,
        ratio_bp=10_000,
        per_item_minor=0,
        per_order_cap_minor=None,
        budget_minor=1_000,
        currency="CNY",
        starts_at=EPOCH,
        ends_at=EPOCH + timedelta(days=30),
        sellers=None,
        closed_at=None,
        matched_minor=5,
    )


@given(offset_s=st.integers(-3600, 2 * 86_400) | st.integers(-2, 2), posted=st.booleans())
def test_a_match_reverses_only_inside_the_window_and_before_the_posting(
    offset_s: int, posted: bool
) -> None:
    """A match is final exactly when its order's donation is: a full refund inside the
    window (and before the posting) takes all of it back, one at or after available_on,
    or after the posting, takes nothing (no seller reversal, so no match reversal)."""
    history = {"s1": [rule("fixed", 5)]}
    ends = EPOCH + WINDOW
    ledgers = {
        "o1": OrderLedger(
            seller_id="s1",
            project_id=PROJECT,
            currency="CNY",
            rule_version=1,
            net_minor=5,
            keys={"accrual"},
            available_on=ends,
            posted=posted,
        )
    }
    at = ends + timedelta(seconds=offset_s)
    plan = plan_batch([refunded(1000, 1000, at, "r1")], history, ledgers)
    matched = plan_matches(
        plan.entries, plan.accruals, plan.net_before, [_campaign()], {"o1": {"c1": 5}},
        plan.full_refunds,
    )  # fmt: skip
    taken = [(e.kind, e.campaign_id, e.amount_minor) for e in matched.entries]
    if at < ends and not posted:
        assert taken == [("match_reversal", "c1", 5)]
        assert matched.deltas == {"c1": -5}
    else:
        assert taken == []
        assert matched.deltas == {}


def test_an_accrual_and_its_match_carry_the_window_on_the_accrual_only() -> None:
    at = EPOCH + timedelta(hours=3)
    plan = plan_batch([completed(1000, at)], {"s1": [rule("fixed", 5)]}, {})
    [match] = plan_matches(plan.entries, plan.accruals, plan.net_before, [_campaign()], {}).entries
    [accrual] = plan.entries
    assert (accrual.available_on, match.kind, match.amount_minor) == (at + WINDOW, "match", 5)
    assert match.available_on is None  # the ledger's CHECK: only accruals carry one
