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
    net_minor: int
    """``donated_minor - reversed_minor``."""
    donation_count: int
    """Accruals: one per donating order."""
    seller_count: int
    """Distinct sellers with at least one accrual."""
    last_donation_at: datetime | None
    """The latest accrual's ``recorded_at`` (UTC); null before the first."""
    pending_minor: int
    posted_minor: int
    disbursed_minor: int
    available_minor: int
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
    net_minor: int
    """``donated_minor - reversed_minor``."""
    donation_count: int
    """Accruals: one per donating order."""
    seller_count: int
    """Distinct sellers with at least one accrual."""
    last_donation_at: datetime | None
    """The latest accrual's ``recorded_at`` (UTC); null before the first."""
    pending_minor: int
    posted_minor: int
    disbursed_minor: int
    available_minor: int
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
    model_config = ConfigDict(extra="forbid")

    disbursement_id: uuid.UUID
    amount_minor: Annotated[MinorAmount, Field(gt=0)]
    recipient: DisbursementText
    purpose: DisbursementText
    evidence_sha256: Sha256Hex | None = None
    evidence_url: EvidenceUrl | None = None


class Disbursement(BaseModel):
    disbursement_id: uuid.UUID
    project_id: uuid.UUID
    currency: str
    amount_minor: int
    recipient: str
    purpose: str
    evidence_sha256: str | None
    evidence_url: str | None
    recorded_at: datetime
    allocations_count: int


class DisbursementPage(BaseModel):
    items: list[Disbursement]
    next_cursor: str | None


class TraceAllocation(BaseModel):
    disbursement_id: uuid.UUID
    entry_id: uuid.UUID
    amount_minor: int
    recipient: str
    purpose: str
    recorded_at: datetime


class OrderTrace(BaseModel):
    """Where an order's donation (and its matches) went."""

    order_id: str
    project_id: uuid.UUID
    currency: str
    net_minor: int
    matched_minor: int
    status: Literal["pending", "posted"]
    allocations: list[TraceAllocation]
    unallocated_minor: int


# --- matching campaigns (relayed from the donations service) -------------------------


class Campaign(BaseModel):
    """A sponsor's matching campaign as the donations service reports it."""

    campaign_id: str
    sponsor: str
    project_id: uuid.UUID
    currency: str
    ratio_bp: int
    per_item_minor: int | None
    per_order_cap_minor: int | None
    budget_minor: int
    matched_minor: int
    remaining_minor: int
    starts_at: datetime
    ends_at: datetime
    status: str


class ProjectCampaigns(BaseModel):
    """A project's campaigns, relayed from the donations service. ``source`` says how
    fresh they are: ``live``, ``stale`` (donations did not answer; the last good list,
    fetched at ``fetched_at``) or ``unavailable`` (no answer yet; no items)."""

    project_id: uuid.UUID
    source: Literal["live", "stale", "unavailable"]
    fetched_at: datetime | None
    items: list[Campaign]
