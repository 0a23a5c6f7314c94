"""Request and response bodies of the charities API: registry, pages, totals."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from shared.money import Currency, MinorAmount
from shared.types import Text

Name = Annotated[Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
RegistrationNo = Annotated[
    Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
]
Description = Annotated[Text, StringConstraints(max_length=4000)]
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
    net_minor: int
    donation_count: int
    seller_count: int
    last_donation_at: datetime | None
    as_of: datetime


class CurrencyTotals(BaseModel):
    charity_id: uuid.UUID
    currency: str
    donated_minor: int
    reversed_minor: int
    net_minor: int
    donation_count: int
    seller_count: int
    last_donation_at: datetime | None
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
    donation_count: int
