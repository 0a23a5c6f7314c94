"""Request and response bodies of the donations API: rules, statements, receipts,
matching campaigns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.money import MAX_MINOR, MinorAmount
from shared.types import Text, Timestamp

BasisPoints = Annotated[int, Field(ge=1, le=10_000, strict=True)]
_DESCRIBED = ConfigDict(use_attribute_docstrings=True)
MAX_PER_ITEM = 1000
ItemId = Annotated[Text, Field(min_length=1, max_length=64)]
CampaignId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
SellerId = Annotated[Text, Field(min_length=1, max_length=64)]


class PerItem(BaseModel):
    """A donation of ``amount_minor`` per unit sold of ``item_id``."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [{"item_id": "school-bag", "amount_minor": 100}]},
    )

    item_id: ItemId
    """The item's id, as on the order's items."""
    amount_minor: MinorAmount
    """The donation per unit sold, in minor units."""


class RuleIn(BaseModel):
    """PUT body. Which of the optional fields a mode needs is checked in service.py."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "project_id": "6d58a855-0bdc-4201-85ef-0f765f52a89c",
                    "mode": "percent",
                    "basis_points": 50,
                    "min_minor": 1,
                    "max_minor": 500,
                    "active": True,
                }
            ]
        },
    )

    project_id: uuid.UUID
    """The active project that receives the seller's donations (its currency is the rule's)."""
    mode: Literal["fixed", "percent"]
    """``fixed``: ``amount_minor`` per order; ``percent``: ``basis_points`` of the total."""
    amount_minor: MinorAmount | None = None
    """The fixed donation per order in minor units (mode ``fixed`` only, at least 1)."""
    basis_points: BasisPoints | None = None
    """The rate in basis points, 1 to 10000 (mode ``percent`` only)."""
    min_minor: MinorAmount | None = None
    """Least donation of a ``percent`` rule in minor units (never above the order total)."""
    max_minor: MinorAmount | None = None
    """Largest donation of a ``percent`` rule in minor units."""
    active: Annotated[bool, Field(strict=True)]
    """A JSON boolean; ``false`` pauses donations from the next order on."""
    per_item: Annotated[list[PerItem], Field(max_length=MAX_PER_ITEM)] = []
    """Donations per unit sold of listed items (at most 1000, each item once)."""


class RuleOut(BaseModel):
    """One version of a seller's donation rule."""

    model_config = _DESCRIBED

    seller_id: str
    """The seller whose rule this is."""
    version: int
    """The rule's version, 1 for the first; every change is a new version."""
    project_id: uuid.UUID
    """The project that receives the donations."""
    mode: Literal["fixed", "percent"]
    """``fixed`` or ``percent``."""
    amount_minor: int | None
    """The fixed donation per order in minor units (mode ``fixed``)."""
    basis_points: int | None
    """The rate in basis points (mode ``percent``)."""
    min_minor: int | None
    """Least donation of a ``percent`` rule, if set."""
    max_minor: int | None
    """Largest donation of a ``percent`` rule, if set."""
    currency: str
    """The project's currency: the rule donates only on orders in it."""
    active: bool
    """Whether the version donates."""
    effective_from: datetime
    """When this version took effect (the server's clock, UTC)."""
    per_item: list[PerItem]
    """Donations per unit sold of listed items."""


class RuleVersionsOut(BaseModel):
    """One page of a seller's rule versions, newest first."""

    model_config = _DESCRIBED

    items: list[RuleOut]
    """The versions of this page."""
    next_cursor: str | None
    """The cursor of the next page; null on the last page."""


class ReceiptEntryOut(BaseModel):
    """One ledger entry of an order's donation."""

    model_config = _DESCRIBED

    entry_id: uuid.UUID
    """The entry's id (derived from the order event, so replays do not repeat it)."""
    kind: Literal["accrual", "reversal", "match", "match_reversal"]
    """``accrual`` adds to the donation, ``reversal`` (a refund) takes back; ``match`` and
    ``match_reversal`` are a sponsor's."""
    amount_minor: int
    """The entry's amount in minor units (never negative)."""
    rule_version: int | None
    """The rule version in effect when the order was placed; null for matches."""
    campaign_id: str | None
    """The matching campaign, for matches; null otherwise."""
    recorded_at: datetime
    """When the ledger recorded the entry (UTC)."""
    available_on: datetime | None  # accruals: when the return window closes
    """When the order's return window closes (UTC); null on reversals."""


class ReceiptOut(BaseModel):
    """The public receipt of the donation one order made: ``net_minor`` is the seller's
    donation, ``matched_minor`` what sponsors added."""

    model_config = _DESCRIBED

    order_id: str
    """The order."""
    seller_id: str
    """The seller the order was placed with."""
    project_id: uuid.UUID
    """The project that received the donation."""
    currency: str
    """The currency of every amount."""
    net_minor: int
    """Accruals minus reversals, in minor units."""
    matched_minor: int
    """Sponsors' matches minus match reversals, in minor units."""
    # pending until the posting is recorded (after available_on), then posted
    status: Literal["pending", "posted"]
    """Where the money is in its life cycle."""
    available_on: datetime | None
    """When the order's return window closes (UTC); null on reversals."""
    # available_on has passed: no refund can reverse this donation any more
    final: bool
    """True once ``available_on`` has passed: no refund can reverse the donation any more."""
    entries: list[ReceiptEntryOut]
    """The order's ledger entries, oldest first."""


class StatementEntryOut(BaseModel):
    """One ledger entry of a seller's statement."""

    model_config = _DESCRIBED

    entry_id: uuid.UUID
    """The entry's id."""
    order_id: str
    """The order the entry is for."""
    seller_id: str
    """The seller."""
    project_id: uuid.UUID
    """The project that received the donation."""
    kind: Literal["accrual", "reversal"]
    """``accrual`` adds to the donation, ``reversal`` (a refund) takes back."""
    amount_minor: int
    """The entry's amount in minor units (never negative)."""
    currency: str
    """The entry's currency."""
    rule_version: int
    """The rule version in effect when the order was placed."""
    recorded_at: datetime
    """When the ledger recorded the entry (UTC)."""


class CurrencyTotalOut(BaseModel):
    """A seller's net donation in one currency."""

    model_config = _DESCRIBED

    currency: str
    """ISO 4217 code."""
    net_minor: int
    """Accruals minus reversals over all the seller's entries, in minor units."""


class StatementOut(BaseModel):
    """One page of a seller's ledger entries (oldest first) and its net per currency."""

    model_config = _DESCRIBED

    items: list[StatementEntryOut]
    """The entries of this page."""
    next_cursor: str | None
    """The cursor of the next page; null on the last page."""
    totals: list[CurrencyTotalOut]
    """The seller's net per currency over all its entries (not just this page)."""


class CampaignIn(BaseModel):
    """A sponsor's matching campaign to create (admin); idempotent by ``campaign_id``.
    Cross-field checks (a positive ratio or per item amount, the window) are in service.py."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "campaign_id": "biostime-2026-children",
                    "sponsor": "Biostime Foundation",
                    "project_id": "ecda2775-eaee-48a6-ac70-7269fb2507d9",
                    "ratio_bp": 10000,
                    "per_item_minor": 100,
                    "per_order_cap_minor": 2000,
                    "budget_minor": 10000000,
                    "starts_at": "2026-12-01T00:00:00Z",
                    "ends_at": "2027-01-01T00:00:00Z",
                    "sellers": ["shop-42"],
                }
            ]
        },
    )

    campaign_id: CampaignId
    """The campaign's id, chosen by the admin (``[A-Za-z0-9._:-]``, at most 64)."""
    sponsor: Annotated[Text, Field(min_length=1, max_length=200)]
    """Who pays the matches."""
    project_id: uuid.UUID
    """The project whose donations are matched (must exist and be active)."""
    ratio_bp: Annotated[int, Field(ge=0, le=1_000_000, strict=True)]
    """Match in basis points of the accrual (10000 = 1:1), half up."""
    per_item_minor: MinorAmount = 0
    """Match per unit in the order (the sum of item quantities), in minor units."""
    per_order_cap_minor: MinorAmount | None = None
    """Most one order's match can be, in minor units; null for no cap."""
    budget_minor: Annotated[int, Field(ge=1, le=MAX_MINOR, strict=True)]
    """The budget in minor units; never exceeded."""
    starts_at: Timestamp
    """Orders placed from this instant on are matched."""
    ends_at: Timestamp
    """Orders placed before this instant are matched; after ``starts_at`` and now."""
    sellers: Annotated[list[SellerId], Field(min_length=1, max_length=1000)] | None = None
    """Only these sellers' orders are matched; null for every seller."""


class CampaignOut(BaseModel):
    """A matching campaign with its live budget."""

    model_config = _DESCRIBED

    campaign_id: str
    """The campaign's id."""
    sponsor: str
    """Who pays the matches."""
    project_id: uuid.UUID
    """The project whose donations are matched."""
    ratio_bp: int
    """Match in basis points of the accrual (10000 = 1:1)."""
    per_item_minor: int
    """Match per unit in the order, in minor units."""
    per_order_cap_minor: int | None
    """Most one order's match can be; null for no cap."""
    budget_minor: int
    """The budget in minor units."""
    starts_at: datetime
    """Orders placed from this instant on are matched (UTC)."""
    ends_at: datetime
    """Orders placed before this instant are matched (UTC)."""
    sellers: list[str] | None
    """Only these sellers' orders are matched; null for every seller."""
    currency: str
    """The project's currency: every amount is in it."""
    matched_minor: int
    """Matches minus match reversals so far, in minor units."""
    remaining_minor: int
    """``budget_minor - matched_minor``."""
    status: Literal["scheduled", "active", "exhausted", "ended"]
    """``scheduled`` before ``starts_at``, ``active``, ``exhausted`` (no budget left) or
    ``ended`` (past ``ends_at`` or closed)."""
    closed_at: datetime | None
    """When an admin closed it; null if not closed."""


class CampaignsOut(BaseModel):
    """A page of campaigns in ``campaign_id`` order."""

    model_config = _DESCRIBED

    items: list[CampaignOut]
    """The campaigns on this page."""
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; null at the end."""


class OrderProofEntryOut(BaseModel):
    """One of the order's log records (a ledger entry, or its posting) with its
    inclusion proof."""

    model_config = _DESCRIBED

    entry_id: uuid.UUID | None
    """The ledger entry (its id in the donations ledger and log); null for the order's
    posting (its leaf's ``type`` is ``posting``)."""
    leaf_index: int
    """The leaf's index in the log."""
    leaf_b64: str
    """The leaf's canonical JSON bytes, base64."""
    inclusion_proof: list[str]
    """The inclusion proof against ``checkpoint``: base64 hashes (RFC 9162)."""


class OrderProofOut(BaseModel):
    """An order's log entries, each with its inclusion proof against ``checkpoint``."""

    model_config = _DESCRIBED

    order_id: str
    """The storefront's order id."""
    order_salt: str
    """The order's salt (hex): ``order_commitment = sha256(order_id || 0x00 || salt)``."""
    checkpoint: str
    """The signed checkpoint every proof here is against (C2SP signed note)."""
    entries: list[OrderProofEntryOut]
    """The order's entries in ledger order, then its posting once posted; each with its
    leaf and proof."""
