"""FIFO allocation: sums, bounds, order and splits, for any candidates and amount."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.charities.allocation import (
    Allocation,
    Candidate,
    InsufficientFunds,
    allocate_fifo,
)

remaining = st.integers(min_value=1, max_value=10**15)
candidate_lists = st.lists(remaining, min_size=1, max_size=30).map(
    lambda amounts: [Candidate(uuid.uuid4(), a) for a in amounts]
)


@st.composite
def fundable(draw: st.DrawFn) -> tuple[int, list[Candidate]]:
    candidates = draw(candidate_lists)
    amount = draw(st.integers(min_value=1, max_value=sum(c.remaining_minor for c in candidates)))
    return amount, candidates


@given(fundable())
def test_allocations_sum_to_the_amount_and_respect_each_entry(
    case: tuple[int, list[Candidate]],
) -> None:
    amount, candidates = case
    allocations = allocate_fifo(amount, candidates)
    assert sum(a.amount_minor for a in allocations) == amount
    left = {c.entry_id: c.remaining_minor for c in candidates}
    for allocation in allocations:
        assert 0 < allocation.amount_minor <= left[allocation.entry_id]
    assert len({a.entry_id for a in allocations}) == len(allocations)


@given(fundable())
def test_oldest_first_and_only_the_last_one_split(case: tuple[int, list[Candidate]]) -> None:
    amount, candidates = case
    allocations = allocate_fifo(amount, candidates)
    # a prefix of the candidates, in their order
    assert [a.entry_id for a in allocations] == [c.entry_id for c in candidates[: len(allocations)]]
    # every one but the last is taken whole
    for allocation, candidate in zip(allocations[:-1], candidates, strict=False):
        assert allocation.amount_minor == candidate.remaining_minor
    # and the last one was needed
    assert sum(c.remaining_minor for c in candidates[: len(allocations) - 1]) < amount


@given(candidate_lists, st.integers(min_value=1, max_value=10**6))
def test_more_than_the_candidates_hold_is_refused(candidates: list[Candidate], extra: int) -> None:
    total = sum(c.remaining_minor for c in candidates)
    with pytest.raises(InsufficientFunds) as raised:
        allocate_fifo(total + extra, candidates)
    assert raised.value.available_minor == total


@given(fundable(), st.integers(min_value=1, max_value=10**6))
def test_consecutive_disbursements_split_a_donation(
    case: tuple[int, list[Candidate]], second: int
) -> None:
    """Two disbursements in a row, the second over what the first left, never take an
    entry beyond its amount together, and together they take the oldest money first."""
    amount, candidates = case
    first = allocate_fifo(amount, candidates)
    taken = {a.entry_id: a.amount_minor for a in first}
    rest = [
        Candidate(c.entry_id, c.remaining_minor - taken.get(c.entry_id, 0))
        for c in candidates
        if c.remaining_minor > taken.get(c.entry_id, 0)
    ]
    second = min(second, sum(c.remaining_minor for c in rest)) if rest else 0
    if second == 0:
        return
    then = allocate_fifo(second, rest)
    for allocation in then:
        taken[allocation.entry_id] = taken.get(allocation.entry_id, 0) + allocation.amount_minor
    for c in candidates:
        assert taken.get(c.entry_id, 0) <= c.remaining_minor
    assert sum(taken.values()) == amount + second


def test_a_split_across_two_disbursements() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    candidates = [Candidate(a, 300), Candidate(b, 500), Candidate(c, 200)]
    assert allocate_fifo(600, candidates) == [Allocation(a, 300), Allocation(b, 300)]
    assert allocate_fifo(250, [Candidate(b, 200), Candidate(c, 200)]) == [
        Allocation(b, 200),
        Allocation(c, 50),
    ]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        allocate_fifo(0, [Candidate(uuid.uuid4(), 5)])
    with pytest.raises(ValueError, match="nothing left"):
        allocate_fifo(5, [Candidate(uuid.uuid4(), 0)])
