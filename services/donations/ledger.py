"""Turns a batch of order events into new ledger entries: pure, no I/O.

The consumer loads, in one query each, the rule histories of the batch's sellers and the
ledger state so far of the batch's orders, then calls ``plan_batch``. Events are applied
in the order given (offset order per partition, hence per order), and the state is
carried forward, so an order completed and refunded within one batch gets its accrual
and then its reversal. An event whose entry already exists (a redelivery) adds nothing.

The return window: an accrual carries ``available_on`` (``completed_at`` + the window);
a refund that happened (its ``occurred_at``) at or after it reverses nothing, and neither
does one for an order already posted (posted is final).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from services.donations.rules import (
    ACCRUAL_KEY,
    DEFAULT_RETURN_WINDOW,
    OrderFacts,
    Outcome,
    RuleVersion,
    available_on,
    compute_donation,
    entry_id,
    refund_in_window,
    refund_key,
    refund_reversal,
)
from shared.events import OrderCompleted, OrderRefunded

# The order events that move money (a cancelled order never donated).
OrderMoneyEvent = OrderCompleted | OrderRefunded


@dataclass(slots=True)
class OrderLedger:
    """What the ledger holds so far for one order."""

    seller_id: str
    project_id: uuid.UUID
    currency: str
    rule_version: int
    net_minor: int
    keys: set[str] = field(default_factory=set)
    available_on: datetime | None = None
    posted: bool = False
    # the per_item part of the accrual (after the cap): only a full refund reverses it
    item_minor: int = 0


EntryKind = Literal["accrual", "reversal", "match", "match_reversal"]


class NewEntry(NamedTuple):
    entry_id: str
    order_id: str
    event_key: str
    seller_id: str
    project_id: uuid.UUID
    kind: EntryKind
    amount_minor: int
    currency: str
    rule_version: int | None  # None for matches (a sponsor's money, not a seller rule's)
    event_id: uuid.UUID
    available_on: datetime | None = None  # accruals only
    campaign_id: str | None = None
    item_minor: int | None = None  # accruals only: the per_item part


class AccrualFacts(NamedTuple):
    """What matching reads of the order behind an accrual (refunds do not carry items)."""

    placed_at: datetime
    units: int  # the sum of the order's item quantities


@dataclass(slots=True)
class BatchPlan:
    entries: list[NewEntry] = field(default_factory=list)
    # (event type, outcome) -> events
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    # entry_id -> facts, for each planned accrual
    accruals: dict[str, AccrualFacts] = field(default_factory=dict)
    # entry_id -> the order's net seller donation just before it, for each planned reversal
    net_before: dict[str, int] = field(default_factory=dict)
    # the planned reversals made by a full refund (refunded_total >= total)
    full_refunds: set[str] = field(default_factory=set)


def _version(history: Sequence[RuleVersion], version: int) -> RuleVersion | None:
    if 0 < version <= len(history) and history[version - 1].version == version:
        return history[version - 1]
    return next((rule for rule in history if rule.version == version), None)


def plan_batch(
    events: Sequence[OrderMoneyEvent],
    histories: Mapping[str, Sequence[RuleVersion]],
    ledgers: dict[str, OrderLedger],
    *,
    window: timedelta = DEFAULT_RETURN_WINDOW,
) -> BatchPlan:
    """New entries for ``events``; updates ``ledgers`` in place as it goes."""
    plan = BatchPlan()
    for event in events:
        if isinstance(event, OrderCompleted):
            _completed(event, histories, ledgers, plan, window)
        else:
            _refunded(event, histories, ledgers, plan)
    return plan


def _completed(
    event: OrderCompleted,
    histories: Mapping[str, Sequence[RuleVersion]],
    ledgers: dict[str, OrderLedger],
    plan: BatchPlan,
    window: timedelta,
) -> None:
    order = event.order
    known = ledgers.get(order.order_id)
    if known is not None and ACCRUAL_KEY in known.keys:
        plan.outcomes[(event.type, "duplicate")] += 1
        return
    items = [(item.item_id, item.quantity) for item in order.items]
    decision = compute_donation(
        OrderFacts(order.currency, order.total_minor, order.placed_at, items),
        histories.get(order.seller_id, ()),
    )
    plan.outcomes[(event.type, decision.outcome.value)] += 1
    if decision.outcome is not Outcome.DONATED or decision.rule is None:
        return
    rule = decision.rule
    accrual_id = entry_id(order.order_id, ACCRUAL_KEY)
    plan.accruals[accrual_id] = AccrualFacts(order.placed_at, sum(q for _, q in items))
    ends = available_on(order.completed_at or event.occurred_at, window)
    plan.entries.append(
        NewEntry(
            entry_id=accrual_id,
            order_id=order.order_id,
            event_key=ACCRUAL_KEY,
            seller_id=order.seller_id,
            project_id=rule.project_id,
            kind="accrual",
            amount_minor=decision.amount_minor,
            currency=rule.currency,
            rule_version=rule.version,
            event_id=event.event_id,
            item_minor=decision.item_minor,
            available_on=ends,
        )
    )
    ledgers[order.order_id] = OrderLedger(
        seller_id=order.seller_id,
        project_id=rule.project_id,
        currency=rule.currency,
        rule_version=rule.version,
        net_minor=decision.amount_minor,
        keys={ACCRUAL_KEY},
        item_minor=decision.item_minor,
        available_on=ends,
    )


def _refunded(
    event: OrderRefunded,
    histories: Mapping[str, Sequence[RuleVersion]],
    ledgers: dict[str, OrderLedger],
    plan: BatchPlan,
) -> None:
    known = ledgers.get(event.order_id)
    key = refund_key(event.refund_id)
    if known is None:
        plan.outcomes[(event.type, "no_donation")] += 1
        return
    if key in known.keys:
        plan.outcomes[(event.type, "duplicate")] += 1
        return
    final = _final_outcome(event, known)
    if final is not None:
        plan.outcomes[(event.type, final)] += 1
        return
    rule = _version(histories.get(known.seller_id, ()), known.rule_version)
    if rule is None:  # rules are never deleted; only a foreign seller_id gets here
        plan.outcomes[(event.type, "no_rule")] += 1
        return
    amount = refund_reversal(
        rule, event.total_minor, event.refunded_total_minor, known.net_minor, known.item_minor
    )
    if amount <= 0:
        plan.outcomes[(event.type, "zero")] += 1
        return
    plan.outcomes[(event.type, "reversed")] += 1
    reversal_id = entry_id(event.order_id, key)
    plan.net_before[reversal_id] = known.net_minor
    if event.refunded_total_minor >= event.total_minor:
        plan.full_refunds.add(reversal_id)
    plan.entries.append(
        NewEntry(
            entry_id=reversal_id,
            order_id=event.order_id,
            event_key=key,
            seller_id=known.seller_id,
            project_id=known.project_id,
            kind="reversal",
            amount_minor=amount,
            currency=known.currency,
            rule_version=known.rule_version,
            event_id=event.event_id,
        )
    )
    known.net_minor -= amount
    known.keys.add(key)


def _final_outcome(event: OrderRefunded, known: OrderLedger) -> str | None:
    """Why a refund reverses nothing because the donation is final, or None if it may."""
    if known.available_on is not None and not refund_in_window(
        event.occurred_at, known.available_on
    ):
        return "after_window"
    if known.posted:  # a refund from inside the window that came after the posting
        return "after_posting"
    return None
