"""The order state machine and order checks: pure functions, no I/O.

States: ``placed → completed → refunded`` and ``placed → cancelled``. A partly refunded
order stays ``completed`` (its ``refunded_minor`` grows) and becomes ``refunded`` once
refunds reach ``total_minor``. Retries are harmless: ``complete`` on an order that is
already completed (or since refunded) and ``cancel`` on a cancelled order change nothing
and emit nothing. Every other move out of the current state is illegal (HTTP 409).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import orjson

from shared.problems import Conflict


class OrderStatus(StrEnum):
    PLACED = "placed"
    COMPLETED = "completed"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class IllegalTransition(Conflict):
    """A move the state machine does not allow from ``current`` (409 naming it)."""

    def __init__(self, action: str, current: OrderStatus) -> None:
        super().__init__(
            f"cannot {action} an order that is {current}", current_status=current.value
        )
        self.action = action
        self.current = current


class RefundExceedsTotal(Exception):
    def __init__(self, total_minor: int, refunded_minor: int, amount_minor: int) -> None:
        left = total_minor - refunded_minor
        super().__init__(
            f"refunds would reach {refunded_minor + amount_minor}, over the order's "
            f"total_minor {total_minor} ({left} left to refund)"
        )


@dataclass(frozen=True)
class Transition:
    status: OrderStatus
    changed: bool  # False: a retry that leaves the order as it is and emits nothing


def complete(current: OrderStatus) -> Transition:
    if current is OrderStatus.PLACED:
        return Transition(OrderStatus.COMPLETED, changed=True)
    if current in (OrderStatus.COMPLETED, OrderStatus.REFUNDED):
        return Transition(current, changed=False)
    raise IllegalTransition("complete", current)


def cancel(current: OrderStatus) -> Transition:
    if current is OrderStatus.PLACED:
        return Transition(OrderStatus.CANCELLED, changed=True)
    if current is OrderStatus.CANCELLED:
        return Transition(current, changed=False)
    raise IllegalTransition("cancel", current)


@dataclass(frozen=True)
class RefundResult:
    status: OrderStatus
    refunded_total_minor: int


def refund(
    current: OrderStatus, total_minor: int, refunded_minor: int, amount_minor: int
) -> RefundResult:
    """A new refund of ``amount_minor`` (> 0) on an order (retries are found by refund_id)."""
    if current is not OrderStatus.COMPLETED:
        raise IllegalTransition("refund", current)
    if amount_minor <= 0:
        raise ValueError("amount_minor must be positive")
    refunded_total = refunded_minor + amount_minor
    if refunded_total > total_minor:
        raise RefundExceedsTotal(total_minor, refunded_minor, amount_minor)
    status = OrderStatus.REFUNDED if refunded_total == total_minor else OrderStatus.COMPLETED
    return RefundResult(status, refunded_total)


class _Item(Protocol):
    @property
    def quantity(self) -> int: ...
    @property
    def unit_price_minor(self) -> int: ...


def items_total(items: Iterable[_Item]) -> int:
    return sum(item.quantity * item.unit_price_minor for item in items)


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


def check_order(
    *,
    total_minor: int,
    items: Iterable[_Item],
    placed_at: datetime | None,
    status: str,
    completed_at: datetime | None,
    now: datetime,
    clock_skew: timedelta,
) -> list[FieldError]:
    """The checks that involve more than one field or the clock (the rest is the schema)."""
    errors: list[FieldError] = []
    expected = items_total(items)
    if total_minor != expected:
        errors.append(
            FieldError(
                "total_minor",
                f"must equal the sum of quantity * unit_price_minor over items ({expected})",
            )
        )
    latest = now + clock_skew
    if placed_at is not None and placed_at > latest:
        errors.append(FieldError("placed_at", "is in the future"))
    if completed_at is not None:
        if status != OrderStatus.COMPLETED:
            errors.append(FieldError("completed_at", 'is only accepted with status "completed"'))
        elif completed_at > latest:
            errors.append(FieldError("completed_at", "is in the future"))
        elif placed_at is not None and completed_at < placed_at:
            errors.append(FieldError("completed_at", "is before placed_at"))
    return errors


def request_hash(canonical: Mapping[str, Any]) -> bytes:
    """Fingerprint of a request's meaning (key order and time zones normalised by the caller)."""
    return hashlib.blake2b(
        orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).digest()


def check_completion(
    *, placed_at: datetime, completed_at: datetime, now: datetime, clock_skew: timedelta
) -> list[FieldError]:
    if completed_at > now + clock_skew:
        return [FieldError("completed_at", "is in the future")]
    if completed_at < placed_at:
        return [FieldError("completed_at", "is before placed_at")]
    return []
