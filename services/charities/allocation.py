"""First-in, first-out allocation of a disbursement to posted ledger entries. Pure, no I/O.

The repository hands over a project's posted entries that still have money left, oldest
first (by posting time, then the entry's ``recorded_at``, then ``entry_id``); this module
decides how much of each one a disbursement takes. It takes whole entries in that order
and splits the last one it needs, so an entry is never allocated beyond what it has left
and the allocations always sum to the disbursement's amount.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A posted entry with money left: ``remaining_minor`` > 0, in FIFO order."""

    entry_id: uuid.UUID
    remaining_minor: int


@dataclass(frozen=True)
class Allocation:
    entry_id: uuid.UUID
    amount_minor: int


class InsufficientFunds(ValueError):
    """The candidates hold less than the amount (the caller checks availability first)."""

    def __init__(self, amount_minor: int, available_minor: int) -> None:
        super().__init__(f"cannot allocate {amount_minor}: only {available_minor} left")
        self.amount_minor = amount_minor
        self.available_minor = available_minor


def allocate_fifo(amount_minor: int, candidates: Iterable[Candidate]) -> list[Allocation]:
    """The allocations of ``amount_minor`` (> 0) over ``candidates`` in their given order."""
    if amount_minor <= 0:
        raise ValueError("a disbursement allocates a positive amount")
    allocations: list[Allocation] = []
    left = amount_minor
    taken = 0
    for candidate in candidates:
        if candidate.remaining_minor <= 0:
            raise ValueError(f"entry {candidate.entry_id} has nothing left to allocate")
        take = min(left, candidate.remaining_minor)
        allocations.append(Allocation(candidate.entry_id, take))
        left -= take
        taken += take
        if left == 0:
            return allocations
    raise InsufficientFunds(amount_minor, taken)
