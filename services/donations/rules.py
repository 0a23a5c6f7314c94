"""The donation arithmetic: pure, typed functions of (order facts, rule history).

No I/O here, so every property (never negative, never above the order total, caps,
rounding half up, the version in effect at ``placed_at``) is tested exhaustively in
tests/unit/test_donations_rules.py.
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, NamedTuple

from shared.money import apply_basis_points

Mode = Literal["fixed", "percent"]

ACCRUAL_KEY = "accrual"


@dataclass(frozen=True, slots=True)
class RuleVersion:
    seller_id: str
    version: int
    project_id: uuid.UUID
    mode: Mode
    amount_minor: int | None
    basis_points: int | None
    min_minor: int | None
    max_minor: int | None
    currency: str
    active: bool
    effective_from: datetime
    # item_id -> donation per unit sold of that item (``per_item``); versioned with the rule
    per_item: Mapping[str, int] = field(default_factory=dict)


class Outcome(StrEnum):
    DONATED = "donated"
    NO_RULE = "no_rule"
    INACTIVE = "inactive"
    CURRENCY_MISMATCH = "currency_mismatch"
    ZERO = "zero"


# NamedTuples, not frozen dataclasses: these are built once per event on the hot path.
class Decision(NamedTuple):
    """What an order.completed yields: an amount (0 unless DONATED), the rule used, and the
    part of the amount that came from ``per_item`` (after the cap at the order total)."""

    outcome: Outcome
    amount_minor: int
    rule: RuleVersion | None
    item_minor: int = 0


class OrderFacts(NamedTuple):
    """The parts of an order the computation reads (from order.completed or order.refunded).

    ``items`` are (item_id, quantity) pairs; an item may appear on several lines.
    """

    currency: str
    total_minor: int
    placed_at: datetime
    items: Sequence[tuple[str, int]] = ()


def rule_at(history: Sequence[RuleVersion], at: datetime) -> RuleVersion | None:
    """The version in effect at ``at``: the latest with ``effective_from <= at``.

    ``history`` is ordered by version (hence by ``effective_from``, which the server sets
    at each change); ties go to the higher version.
    """
    if len(history) == 1:  # the common case
        return history[0] if history[0].effective_from <= at else None
    index = bisect.bisect_right(history, at, key=_effective_from)
    return history[index - 1] if index else None


def _effective_from(rule: RuleVersion) -> datetime:
    return rule.effective_from


def apply_rule(rule: RuleVersion, base_minor: int) -> int:
    """``rule`` applied to ``base_minor``: clamped to its caps, never above the base, never < 0."""
    if base_minor <= 0:
        return 0
    if rule.mode == "fixed":
        amount = rule.amount_minor or 0
    else:
        amount = percent_amount(rule, base_minor)
    return max(0, min(amount, base_minor))


def percent_amount(rule: RuleVersion, base_minor: int) -> int:
    """A percent rule on ``base_minor``: basis points half up, then its ``[min, max]`` clamp.

    No cap at the base: after a refund the net becomes this of what is left, and the
    contract's cap at the order total applies once, at the accrual (``apply_rule``).
    """
    amount = apply_basis_points(base_minor, rule.basis_points or 0)
    if rule.min_minor is not None:
        amount = max(amount, rule.min_minor)
    if rule.max_minor is not None:
        amount = min(amount, rule.max_minor)
    return max(0, amount)


def item_amount(rule: RuleVersion, items: Sequence[tuple[str, int]]) -> int:
    """The ``per_item`` part before any cap: ``quantity * amount_minor`` over listed items."""
    per_item = rule.per_item
    if not per_item:
        return 0
    return sum(per_item.get(item_id, 0) * max(0, quantity) for item_id, quantity in items)


def compute_donation(order: OrderFacts, history: Sequence[RuleVersion]) -> Decision:
    """The accrual an order.completed makes under the seller's rule ``history``.

    The order part (``mode``) plus the item part, capped at the order total once, here.
    The cap is taken off the item part (the order part alone never exceeds the total),
    so ``item_minor`` is what a partial refund must leave alone.
    """
    rule = rule_at(history, order.placed_at)
    if rule is None:
        return Decision(Outcome.NO_RULE, 0, None)
    if not rule.active:
        return Decision(Outcome.INACTIVE, 0, rule)
    if rule.currency != order.currency:
        return Decision(Outcome.CURRENCY_MISMATCH, 0, rule)
    order_part = apply_rule(rule, order.total_minor)
    amount = min(order_part + item_amount(rule, order.items), max(0, order.total_minor))
    outcome = Outcome.DONATED if amount > 0 else Outcome.ZERO
    return Decision(outcome, amount, rule, amount - order_part)


def refund_reversal(
    rule: RuleVersion,
    total_minor: int,
    refunded_total_minor: int,
    net_minor: int,
    item_minor: int = 0,
) -> int:
    """The reversal an order.refunded makes, given the order's current net donation and
    the item part (``item_minor``) of its accrual.

    The order part follows the rule: ``percent``: it becomes the rule applied to what was
    not refunded (clamped to its min/max, with no second cap at that remainder), and the
    difference is reversed; ``fixed``: only a full refund reverses it. The item part is
    reversed only by a full refund, and then all of it. The net never goes below 0, and a
    refund never adds to the donation.
    """
    if net_minor <= 0:
        return 0
    full = refunded_total_minor >= total_minor
    if rule.mode == "fixed":
        return net_minor if full else 0
    item_net = min(max(0, item_minor), net_minor)
    target = percent_amount(rule, max(0, total_minor - refunded_total_minor))
    reversal = max(0, net_minor - item_net - target)
    return min(net_minor, reversal + (item_net if full else 0))


def refund_key(refund_id: str) -> str:
    return f"refund:{refund_id}"


def entry_id(order_id: str, event_key: str) -> str:
    """A UUID (text form) derived from the entry's unique key: a redelivered event yields
    the same id as the first delivery. MD5 only as a cheap, stable 128-bit digest."""
    h = hashlib.md5(f"{order_id}\x00{event_key}".encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- the return window -------------------------------------------------------------------

DEFAULT_RETURN_WINDOW = timedelta(days=7)


def available_on(completed_at: datetime, window: timedelta) -> datetime:
    """When an order's donation leaves its return window: the window runs from the
    order's ``completed_at`` (the event's), never from when the event was processed."""
    return completed_at + window


def refund_in_window(refund_occurred_at: datetime, order_available_on: datetime) -> bool:
    """Whether a refund can still reverse: it happened before ``available_on``. A refund
    at or after it reverses nothing (the donation is final)."""
    return refund_occurred_at < order_available_on
