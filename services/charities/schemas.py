"""Request and response bodies of the charities API: registry, pages, totals,
disbursements and the trace of an order."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.money import Currency, MinorAmount
from shared.types import Text

Name = Annotated[Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
RegistrationNo = Annotated[
    Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
]
Description = Annotated[Text, StringConstraints(max_length=4000)]
ProjectStatus = Literal["active", "closed"]


_DESCRIBED = ConfigDict(use_attribute_docstrings=True)


class CharityCreate(BaseModel):
    """A charity to register."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [{"name": "Spring Bud", "registration_no": "53100000500021676Q"}]
        },
    )

    name: Name
    """The charity's name (1 to 200 characters, trimmed)."""
    registration_no: RegistrationNo | None = None
    """Its official registration number (1 to 64 characters, trimmed): the natural key."""


class Charity(BaseModel):
    """A registered charity."""

    model_config = _DESCRIBED

    charity_id: uuid.UUID
    """The charity's id."""
    name: str
    """The charity's name."""
    registration_no: str | None
    """Its official registration number, if given."""
    created_at: datetime
    """When it was registered (UTC)."""


class CharityPage(BaseModel):
    """One page of charities, oldest first."""

    model_config = _DESCRIBED

    items: list[Charity]
    """The charities of this page."""
    next_cursor: str | None
    """The cursor of the next page; null on the last page."""


class ProjectCreate(BaseModel):
    """A project to open under a charity."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "Books for rural schools",
                    "description": "Libraries for 20 village schools in Yunnan",
                    "currency": "CNY",
                    "goal_minor": 10000000,
                }
            ]
        },
    )

    name: Name
    """The project's name, unique within its charity (1 to 200 characters, trimmed)."""
    description: Description | None = None
    """What the project does (up to 4000 characters)."""
    currency: Currency
    """ISO 4217 code of the donations it takes."""
    goal_minor: MinorAmount | None = None
    """The amount it aims to raise in minor units, if it has a goal."""


class Project(BaseModel):
    """A charity's project."""

    model_config = _DESCRIBED

    project_id: uuid.UUID
    """The project's id."""
    charity_id: uuid.UUID
    """The charity that runs it."""
    name: str
    """The project's name."""
    description: str | None
    """What the project does, if described."""
    currency: str
    """ISO 4217 code of the donations it takes."""
    goal_minor: int | None
    """The amount it aims to raise in minor units, if it has a goal."""
    status: ProjectStatus
    """``active`` takes donations; ``closed`` takes no new rules."""
    created_at: datetime
    """When it was opened (UTC)."""
    closed_at: datetime | None
    """When it was closed (UTC), if it was."""


class ProjectPage(BaseModel):
    """One page of projects, oldest first."""

    model_config = _DESCRIBED

    items: list[Project]
    """The projects of this page."""
    next_cursor: str | None
    """The cursor of the next page; null on the last page."""


class Totals(BaseModel):
    """One project's donation totals in its currency."""

    model_config = _DESCRIBED

    project_id: uuid.UUID
    """The project."""
    currency: str
    """The currency of every amount."""
    donated_minor: int
    """The sum of accruals in minor units."""
    reversed_minor: int
    """The sum of reversals (refunds) in minor units."""
    matched_minor: int
    """Sponsors' matches minus match reversals, in minor units."""
    net_minor: int
    """``donated_minor - reversed_minor``."""
    donation_count: int
    """Accruals: one per donating order."""
    seller_count: int
    """Distinct sellers with at least one accrual."""
    last_donation_at: datetime | None
    """The latest accrual's ``recorded_at`` (UTC); null before the first."""
    pending_minor: int
    """Money still inside its return window: ``net_minor - posted_minor``."""
    posted_minor: int
    """Money whose return window has closed and whose posting is recorded (final)."""
    disbursed_minor: int
    """Money the charity has recorded as paid out of this project."""
    available_minor: int
    """Posted money not yet disbursed: ``posted_minor - disbursed_minor``."""
    as_of: datetime
    """When these totals last changed (UTC)."""


class CurrencyTotals(BaseModel):
    """A charity's totals in one currency, summed over its projects."""

    model_config = _DESCRIBED

    charity_id: uuid.UUID
    """The charity."""
    currency: str
    """The currency of every amount."""
    donated_minor: int
    """The sum of accruals in minor units."""
    reversed_minor: int
    """The sum of reversals (refunds) in minor units."""
    matched_minor: int
    """Sponsors' matches minus match reversals, in minor units."""
    net_minor: int
    """``donated_minor - reversed_minor``."""
    donation_count: int
    """Accruals: one per donating order."""
    seller_count: int
    """Distinct sellers with at least one accrual."""
    last_donation_at: datetime | None
    """The latest accrual's ``recorded_at`` (UTC); null before the first."""
    pending_minor: int
    """Money still inside its return window: ``net_minor - posted_minor``."""
    posted_minor: int
    """Money whose return window has closed and whose posting is recorded (final)."""
    disbursed_minor: int
    """Money the charity has recorded as paid out of this project."""
    available_minor: int
    """Posted money not yet disbursed: ``posted_minor - disbursed_minor``."""
    as_of: datetime
    """When these totals last changed (UTC)."""


class CharityTotals(BaseModel):
    """A charity's totals summed over its projects, one item per currency."""

    model_config = _DESCRIBED

    charity_id: uuid.UUID
    """The charity."""
    items: list[CurrencyTotals]
    """One item per currency of its projects."""
    as_of: datetime
    """When any of these totals last changed (UTC)."""


class DashboardTotals(Totals):
    """One project's totals with what a dashboard shows next to them."""

    name: str | None
    """The project's name (null for a project seen only in the ledger)."""
    charity_id: uuid.UUID | None
    """The charity that runs it."""
    charity_name: str | None
    """The charity's name."""
    goal_minor: int | None
    """The amount it aims to raise in minor units, if it has a goal."""
    status: ProjectStatus | None
    """``active`` or ``closed``."""


class AllTotals(BaseModel):
    """Every project's totals, ordered by charity name, then project creation."""

    model_config = _DESCRIBED

    items: list[DashboardTotals]
    """One item per project."""
    as_of: datetime
    """When any of these totals last changed (UTC)."""


class DailyTotals(BaseModel):
    """One UTC day of a project's ledger entries."""

    model_config = _DESCRIBED

    date: date
    """The UTC day."""
    donated_minor: int
    """The sum of that day's accruals in minor units."""
    reversed_minor: int
    """The sum of that day's reversals in minor units."""
    matched_minor: int
    """Matches minus match reversals that day, in minor units."""
    donation_count: int
    """That day's accruals."""


# --- disbursements and the trace ----------------------------------------------------------

DisbursementText = Annotated[
    Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
EvidenceUrl = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]


class DisbursementCreate(BaseModel):
    """A payment to record; idempotent by ``disbursement_id``."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "disbursement_id": "0b7c6f0e-3a52-4c1e-9d0e-5f1f5d7a2b61",
                    "amount_minor": 150000,
                    "recipient": "Hope Primary School, Liangshan",
                    "purpose": "120 school bags",
                    "evidence_sha256": "9f86d081884c7d659a2feaa0c55ad015"
                    "a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "evidence_url": "https://example.org/receipts/2026-11-28.pdf",
                }
            ]
        },
    )

    disbursement_id: uuid.UUID
    """The disbursement's id (a UUID, chosen by the client: the idempotency key)."""
    amount_minor: Annotated[MinorAmount, Field(gt=0)]
    """The amount in minor units."""
    recipient: DisbursementText
    """Who was paid."""
    purpose: DisbursementText
    """What the money paid for."""
    evidence_sha256: Sha256Hex | None = None
    """Lower-case hex SHA-256 of the evidence document, if any."""
    evidence_url: EvidenceUrl | None = None
    """Where the evidence can be read (http or https), if anywhere."""


class Disbursement(BaseModel):
    """A payment a charity recorded out of a project's posted money."""

    model_config = _DESCRIBED

    disbursement_id: uuid.UUID
    """The disbursement's id (a UUID, chosen by the client: the idempotency key)."""
    project_id: uuid.UUID
    """The project."""
    currency: str
    """The currency of every amount (ISO 4217)."""
    amount_minor: int
    """The amount in minor units."""
    recipient: str
    """Who was paid."""
    purpose: str
    """What the money paid for."""
    evidence_sha256: str | None
    """Lower-case hex SHA-256 of the evidence document, if any."""
    evidence_url: str | None
    """Where the evidence can be read (http or https), if anywhere."""
    recorded_at: datetime
    """When it was recorded (UTC)."""
    allocations_count: int
    """Allocation rows: one per (disbursement, ledger entry) it used."""


class DisbursementPage(BaseModel):
    """A page of a project's disbursements, newest first."""

    model_config = _DESCRIBED

    items: list[Disbursement]
    """The items on this page."""
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; null at the end."""


class TraceAllocation(BaseModel):
    """One allocation of an order's entry to a disbursement."""

    model_config = _DESCRIBED

    disbursement_id: uuid.UUID
    """The disbursement's id (a UUID, chosen by the client: the idempotency key)."""
    entry_id: uuid.UUID
    """The ledger entry (its id in the donations ledger and log)."""
    amount_minor: int
    """The amount in minor units."""
    recipient: str
    """Who was paid."""
    purpose: str
    """What the money paid for."""
    recorded_at: datetime
    """When it was recorded (UTC)."""


class OrderTrace(BaseModel):
    """Where an order's donation (and its matches) went."""

    model_config = _DESCRIBED

    order_id: str
    """The storefront's order id."""
    project_id: uuid.UUID
    """The project."""
    currency: str
    """The currency of every amount (ISO 4217)."""
    net_minor: int
    """The seller's donation: accruals minus reversals, in minor units."""
    matched_minor: int
    """Sponsors' matches minus match reversals, in minor units."""
    status: Literal["pending", "posted"]
    """Where the money is in its life cycle."""
    allocations: list[TraceAllocation]
    """Which disbursements used how much of this order's entries, oldest first."""
    unallocated_minor: int
    """``net_minor + matched_minor`` minus the allocations."""


# --- matching campaigns (relayed from the donations service) -------------------------


class Campaign(BaseModel):
    """A sponsor's matching campaign as the donations service reports it."""

    model_config = _DESCRIBED

    campaign_id: str
    """The campaign's id (chosen by the admin who created it)."""
    sponsor: str
    """Who pays the matches."""
    project_id: uuid.UUID
    """The project."""
    currency: str
    """The currency of every amount (ISO 4217)."""
    ratio_bp: int
    """Match ratio in basis points of the accrual (10000 = 1:1), half up."""
    per_item_minor: int | None
    """Match per unit in the order, in minor units."""
    per_order_cap_minor: int | None
    """Most one order's match can be, in minor units."""
    budget_minor: int
    """The campaign's budget in minor units; never exceeded."""
    matched_minor: int
    """Sponsors' matches minus match reversals, in minor units."""
    remaining_minor: int
    """``budget_minor - matched_minor``."""
    starts_at: datetime
    """Orders placed from this instant on are matched (UTC)."""
    ends_at: datetime
    """Orders placed before this instant are matched (UTC)."""
    status: str
    """Where the money is in its life cycle."""


class ProjectCampaigns(BaseModel):
    """A project's campaigns, relayed from the donations service. ``source`` says how
    fresh they are: ``live``, ``stale`` (donations did not answer; the last good list,
    fetched at ``fetched_at``) or ``unavailable`` (no answer yet; no items)."""

    model_config = _DESCRIBED

    project_id: uuid.UUID
    """The project."""
    source: Literal["live", "stale", "unavailable"]
    """``live``, ``stale`` (donations did not answer; the last good list) or ``unavailable``."""
    fetched_at: datetime | None
    """When the list was fetched from the donations service; null if never."""
    items: list[Campaign]
    """The items on this page."""


# --- an order's donation proof (relayed from the donations log) -----------------------


class DonationProofEntry(BaseModel):
    """One record of the order in the donations log, with its inclusion proof."""

    model_config = _DESCRIBED

    entry_id: str | None
    """The ledger entry; null for the order's posting."""
    leaf_index: int
    """The leaf's index in the donations log."""
    leaf_b64: str
    """The leaf's canonical JSON bytes, base64."""
    inclusion_proof: list[str]
    """RFC 9162 inclusion proof against ``checkpoint``, base64 hashes."""


class DonationProof(BaseModel):
    """An order's records in the donations transparency log, as the donations service
    serves them (relayed unverified: the page verifies them against the pinned key)."""

    model_config = _DESCRIBED

    order_id: str
    """The storefront's order id."""
    order_salt: str
    """The order's salt (hex): ``order_commitment = sha256(order_id || 0x00 || salt)``."""
    checkpoint: str
    """The donations log's signed checkpoint every proof here is against."""
    entries: list[DonationProofEntry]
    """The order's entries, then its posting once posted."""


# --- a disbursement's proof (the charities log) ----------------------------------------


class DisbursementProofEntryOut(BaseModel):
    """One of the disbursement's leaves with its inclusion proof."""

    model_config = _DESCRIBED

    leaf_index: int
    """The leaf's index in the charities log."""
    leaf_b64: str
    """The leaf's canonical JSON bytes, base64 (a ``disbursement`` or ``allocation`` leaf)."""
    inclusion_proof: list[str]
    """The inclusion proof against ``checkpoint``: base64 hashes (RFC 9162)."""


class DisbursementProofOut(BaseModel):
    """A disbursement's leaf and its allocations' leaves, each with its inclusion proof
    against ``checkpoint``."""

    model_config = _DESCRIBED

    disbursement_id: uuid.UUID
    """The disbursement."""
    checkpoint: str
    """The signed checkpoint every proof here is against (C2SP signed note)."""
    entries: list[DisbursementProofEntryOut]
    """The disbursement's leaf first, then one leaf per allocation, in log order."""
