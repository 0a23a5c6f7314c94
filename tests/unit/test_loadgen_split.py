"""The load generator's work split: every script sent by exactly one worker, each seller's
scripts on one worker in plan order, and the parts balanced."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from tools.loadgen import Call, Script, default_workers, split

CREATE = Call("POST", "/v1/orders", (200, 201), b"{}")


def scripts_of(sellers: list[int]) -> list[Script]:
    return [Script(n, f"s{seller}", f"o{n}", (CREATE,)) for n, seller in enumerate(sellers)]


@given(
    sellers=st.lists(st.integers(min_value=0, max_value=40), max_size=400),
    workers=st.integers(min_value=1, max_value=6),
)
def test_every_script_goes_to_one_worker_and_each_seller_keeps_its_order(
    sellers: list[int], workers: int
) -> None:
    scripts = scripts_of(sellers)
    parts = split(scripts, workers)

    assert len(parts) == workers
    sent = [s.order_id for part in parts for s in part]
    assert sorted(sent) == sorted(s.order_id for s in scripts)
    assert len(sent) == len(set(sent))
    worker_of: dict[str, set[int]] = {}
    for index, part in enumerate(parts):
        for script in part:
            worker_of.setdefault(script.seller_id, set()).add(index)
    assert all(len(indexes) == 1 for indexes in worker_of.values())
    for part in parts:
        for seller in {s.seller_id for s in part}:
            planned = [s.n for s in scripts if s.seller_id == seller]
            assert [s.n for s in part if s.seller_id == seller] == planned
        assert [s.n for s in part] == sorted(s.n for s in part)


def test_parts_are_balanced_within_the_largest_seller() -> None:
    sellers = [n % 300 for n in range(20_000)] + [7] * 500  # one seller far above the rest
    parts = split(scripts_of(sellers), 3)
    sizes = [len(part) for part in parts]
    largest_seller = max(Counter(sellers).values())
    assert max(sizes) - min(sizes) <= largest_seller


def test_enough_workers_for_the_rate() -> None:
    assert default_workers(500) == 1
    assert default_workers(2_000) == 2
    assert default_workers(10_000) == 4
    assert default_workers(0) >= 2
