"""The order state machine and order checks, exhaustively and with hypothesis."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orders import domain
from services.orders.domain import IllegalTransition, OrderStatus, RefundExceedsTotal

NOW = datetime(2025, 11, 11, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Item:
    quantity: int
    unit_price_minor: int


def test_complete_moves_placed_and_is_a_no_op_after() -> None:
    assert domain.complete(OrderStatus.PLACED) == domain.Transition(OrderStatus.COMPLETED, True)
    for status in (OrderStatus.COMPLETED, OrderStatus.REFUNDED):
        assert domain.complete(status) == domain.Transition(status, False)
    with pytest.raises(IllegalTransition) as info:
        domain.complete(OrderStatus.CANCELLED)
    assert info.value.current is OrderStatus.CANCELLED


def test_cancel_only_from_placed() -> None:
    assert domain.cancel(OrderStatus.PLACED) == domain.Transition(OrderStatus.CANCELLED, True)
    assert domain.cancel(OrderStatus.CANCELLED) == domain.Transition(OrderStatus.CANCELLED, False)
    for status in (OrderStatus.COMPLETED, OrderStatus.REFUNDED):
        with pytest.raises(IllegalTransition) as info:
            domain.cancel(status)
        assert info.value.current is status


@pytest.mark.parametrize(
    "status", [OrderStatus.PLACED, OrderStatus.CANCELLED, OrderStatus.REFUNDED]
)
def test_refund_needs_a_completed_order(status: OrderStatus) -> None:
    with pytest.raises(IllegalTransition):
        domain.refund(status, 100, 0, 1)


@given(
    total=st.integers(0, 10**6),
    amounts=st.lists(st.integers(1, 10**6), max_size=20),
)
def test_refunds_never_exceed_total_and_status_follows(total: int, amounts: list[int]) -> None:
    status, refunded = OrderStatus.COMPLETED, 0
    for amount in amounts:
        if status is OrderStatus.REFUNDED:
            with pytest.raises(IllegalTransition):
                domain.refund(status, total, refunded, amount)
            continue
        if refunded + amount > total:
            with pytest.raises(RefundExceedsTotal):
                domain.refund(status, total, refunded, amount)
            continue
        result = domain.refund(status, total, refunded, amount)
        assert result.refunded_total_minor == refunded + amount
        status, refunded = result.status, result.refunded_total_minor
        assert (status is OrderStatus.REFUNDED) == (refunded == total)
    assert 0 <= refunded <= total


@given(st.lists(st.sampled_from(["complete", "cancel", "refund"]), max_size=12))
def test_every_path_stays_in_the_machine(actions: list[str]) -> None:
    """Any sequence of requests: legal moves only, and terminal states stay terminal."""
    status, refunded, total = OrderStatus.PLACED, 0, 3
    seen = [status]
    for action in actions:
        try:
            if action == "complete":
                status = domain.complete(status).status
            elif action == "cancel":
                status = domain.cancel(status).status
            else:
                result = domain.refund(status, total, refunded, 1)
                status, refunded = result.status, result.refunded_total_minor
        except IllegalTransition as exc:
            current = exc.current
            assert current is status  # noqa: PT017  (hypothesis drives many actions per example)
        seen.append(status)
    allowed = {
        OrderStatus.PLACED: {OrderStatus.PLACED, OrderStatus.COMPLETED, OrderStatus.CANCELLED},
        OrderStatus.COMPLETED: {OrderStatus.COMPLETED, OrderStatus.REFUNDED},
        OrderStatus.REFUNDED: {OrderStatus.REFUNDED},
        OrderStatus.CANCELLED: {OrderStatus.CANCELLED},
    }
    for before, after in zip(seen, seen[1:], strict=False):
        assert after in allowed[before]


@given(st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 10**6)), min_size=1, max_size=20))
def test_check_order_total_must_match_items(pairs: list[tuple[int, int]]) -> None:
    items = [Item(q, p) for q, p in pairs]
    total = sum(q * p for q, p in pairs)
    for candidate, expected in ((total, []), (total + 1, ["total_minor"])):
        errors = domain.check_order(
            total_minor=candidate,
            items=items,
            placed_at=NOW,
            status="placed",
            completed_at=None,
            now=NOW,
            clock_skew=SKEW,
        )
        assert [e.field for e in errors] == expected


def test_check_order_timestamps() -> None:
    items = [Item(1, 10)]

    def fields(**kw: object) -> list[str]:
        args: dict[str, object] = {
            "total_minor": 10,
            "items": items,
            "placed_at": NOW,
            "status": "placed",
            "completed_at": None,
            "now": NOW,
            "clock_skew": SKEW,
        }
        args.update(kw)
        return [e.field for e in domain.check_order(**args)]  # type: ignore[arg-type]

    assert fields(placed_at=NOW + SKEW) == []
    assert fields(placed_at=NOW + SKEW + timedelta(seconds=1)) == ["placed_at"]
    assert fields(status="completed", completed_at=NOW) == []
    assert fields(status="completed", completed_at=NOW - timedelta(seconds=1)) == ["completed_at"]
    assert fields(status="completed", completed_at=NOW + timedelta(hours=1)) == ["completed_at"]
    assert fields(completed_at=NOW) == ["completed_at"]  # only with status completed
    # completed a moment ago (by the storefront's clock), placed_at left to the server
    assert fields(placed_at=None, status="completed", completed_at=NOW - timedelta(1)) == []


def test_request_hash_ignores_key_order() -> None:
    assert domain.request_hash({"a": 1, "b": [1, 2]}) == domain.request_hash({"b": [1, 2], "a": 1})
    assert domain.request_hash({"a": 1}) != domain.request_hash({"a": 2})
