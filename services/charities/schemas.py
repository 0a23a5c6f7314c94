"""Request and response bodies of the charities API: registry, pages, totals,
disbursements and the trace of an order."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.money import Currency, MinorAmount

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
RegistrationNo = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
]
Description = Annotated[str, StringConstraints(max_length=4000)]
ProjectStatus = Literal["active", "closed"]


class CharityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    registration_no: RegistrationNo | None = None


class Charity(BaseModel):
    charity_id: uuid.UUID
    name: str
    registration_no: str | None
    created_at: datetime


class CharityPage(BaseModel):
    items: list[Charity]
    next_cursor: str | None


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description | None = None
    currency: Currency
    goal_minor: MinorAmount | None = None


class Project(BaseModel):
    project_id: uuid.UUID
    charity_id: uuid.UUID
    name: str
    description: str | None
    currency: str
    goal_minor: int | None
    status: ProjectStatus
    created_at: datetime
    closed_at: datetime | None


class ProjectPage(BaseModel):
    items: list[Project]
    next_cursor: str | None


class Totals(BaseModel):
    project_id: uuid.UUID
    currency: str
    donated_minor: int
    reversed_minor: int
    matched_minor: int
    net_minor: int
    donation_count: int
    seller_count: int
    last_donation_at: datetime | None
    pending_minor: int
    posted_minor: int
    disbursed_minor: int
    available_minor: int
    as_of: datetime


class CurrencyTotals(BaseModel):
    charity_id: uuid.UUID
    currency: str
    donated_minor: int
    reversed_minor: int
    matched_minor: int
    net_minor: int
    donation_count: int
    seller_count: int
    last_donation_at: datetime | None
    pending_minor: int
    posted_minor: int
    disbursed_minor: int
    available_minor: int
    as_of: datetime


class CharityTotals(BaseModel):
    """A charity's totals summed over its projects, one item per currency."""

    charity_id: uuid.UUID
    items: list[CurrencyTotals]
    as_of: datetime


class DashboardTotals(Totals):
    """One project's totals with what a dashboard shows next to them."""

    name: str | None
    charity_id: uuid.UUID | None
    charity_name: str | None
    goal_minor: int | None
    status: ProjectStatus | None


class AllTotals(BaseModel):
    items: list[DashboardTotals]
    as_of: datetime


class DailyTotals(BaseModel):
    date: date
    donated_minor: int
    reversed_minor: int
    matched_minor: int
    donation_count: int


# --- disbursements and the trace ----------------------------------------------------------

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
EvidenceUrl = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]


class DisbursementCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disbursement_id: uuid.UUID
    amount_minor: Annotated[MinorAmount, Field(gt=0)]
    recipient: Text
    purpose: Text
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
