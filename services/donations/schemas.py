"""Request and response bodies of the donations API: rules, statements, receipts,
matching campaigns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.money import MAX_MINOR, MinorAmount

BasisPoints = Annotated[int, Field(ge=1, le=10_000, strict=True)]
MAX_PER_ITEM = 1000
ItemId = Annotated[str, Field(min_length=1, max_length=64)]
CampaignId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
SellerId = Annotated[str, Field(min_length=1, max_length=64)]


class PerItem(BaseModel):
    """A donation of ``amount_minor`` per unit sold of ``item_id``."""

    model_config = ConfigDict(extra="forbid")

    item_id: ItemId
    amount_minor: MinorAmount


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
    per_item: Annotated[list[PerItem], Field(max_length=MAX_PER_ITEM)] = []


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
    per_item: list[PerItem]


class RuleVersionsOut(BaseModel):
    items: list[RuleOut]
    next_cursor: str | None


class ReceiptEntryOut(BaseModel):
    entry_id: uuid.UUID
    kind: Literal["accrual", "reversal", "match", "match_reversal"]
    amount_minor: int
    rule_version: int | None
    campaign_id: str | None
    recorded_at: datetime
    available_on: datetime | None  # accruals: when the return window closes


class ReceiptOut(BaseModel):
    """``net_minor`` is the seller's donation; ``matched_minor`` what sponsors added."""

    order_id: str
    seller_id: str
    project_id: uuid.UUID
    currency: str
    net_minor: int
    matched_minor: int
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


class CampaignIn(BaseModel):
    """POST /v1/campaigns. Cross-field checks (a positive ratio or per item amount, the
    window) are in service.py."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: CampaignId
    sponsor: Annotated[str, Field(min_length=1, max_length=200)]
    project_id: uuid.UUID
    ratio_bp: Annotated[int, Field(ge=0, le=1_000_000, strict=True)]
    per_item_minor: MinorAmount = 0
    per_order_cap_minor: MinorAmount | None = None
    budget_minor: Annotated[int, Field(ge=1, le=MAX_MINOR, strict=True)]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    sellers: Annotated[list[SellerId], Field(min_length=1, max_length=1000)] | None = None


class CampaignOut(BaseModel):
    campaign_id: str
    sponsor: str
    project_id: uuid.UUID
    ratio_bp: int
    per_item_minor: int
    per_order_cap_minor: int | None
    budget_minor: int
    starts_at: datetime
    ends_at: datetime
    sellers: list[str] | None
    currency: str
    matched_minor: int
    remaining_minor: int
    status: Literal["scheduled", "active", "exhausted", "ended"]
    closed_at: datetime | None


class CampaignsOut(BaseModel):
    items: list[CampaignOut]
    next_cursor: str | None


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
