"""Request and response bodies of the donations API: rules, statements, receipts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.money import MinorAmount

BasisPoints = Annotated[int, Field(ge=1, le=10_000, strict=True)]


class RuleIn(BaseModel):
    """PUT body. Which of the optional fields a mode needs is checked in service.py."""

    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID
    mode: Literal["fixed", "percent"]
    amount_minor: MinorAmount | None = None
    basis_points: BasisPoints | None = None
    min_minor: MinorAmount | None = None
    max_minor: MinorAmount | None = None
    active: Annotated[bool, Field(strict=True)]


class RuleOut(BaseModel):
    seller_id: str
    version: int
    project_id: uuid.UUID
    mode: Literal["fixed", "percent"]
    amount_minor: int | None
    basis_points: int | None
    min_minor: int | None
    max_minor: int | None
    currency: str
    active: bool
    effective_from: datetime


class RuleVersionsOut(BaseModel):
    items: list[RuleOut]
    next_cursor: str | None


class ReceiptEntryOut(BaseModel):
    entry_id: uuid.UUID
    kind: Literal["accrual", "reversal"]
    amount_minor: int
    rule_version: int
    recorded_at: datetime
    available_on: datetime | None  # accruals: when the return window closes


class ReceiptOut(BaseModel):
    order_id: str
    seller_id: str
    project_id: uuid.UUID
    currency: str
    net_minor: int
    # pending until the posting is recorded (after available_on), then posted
    status: Literal["pending", "posted"]
    available_on: datetime | None
    # available_on has passed: no refund can reverse this donation any more
    final: bool
    entries: list[ReceiptEntryOut]


class StatementEntryOut(BaseModel):
    entry_id: uuid.UUID
    order_id: str
    seller_id: str
    project_id: uuid.UUID
    kind: Literal["accrual", "reversal"]
    amount_minor: int
    currency: str
    rule_version: int
    recorded_at: datetime


class CurrencyTotalOut(BaseModel):
    currency: str
    net_minor: int


class StatementOut(BaseModel):
    """One page of a seller's ledger entries (oldest first) and its net per currency."""

    items: list[StatementEntryOut]
    next_cursor: str | None
    totals: list[CurrencyTotalOut]


class OrderProofEntryOut(BaseModel):
    entry_id: uuid.UUID
    leaf_index: int
    leaf_b64: str
    inclusion_proof: list[str]


class OrderProofOut(BaseModel):
    """An order's log entries, each with its inclusion proof against ``checkpoint``."""

    order_id: str
    order_salt: str
    checkpoint: str
    entries: list[OrderProofEntryOut]
