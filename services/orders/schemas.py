"""Request and response bodies of the orders API (API.md, "orders service")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from shared.money import MAX_MINOR, Currency, MinorAmount

KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=KEY_PATTERN)]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# RFC 3339 with a zone (a naive timestamp is refused), held in UTC.
UtcTimestamp = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Quantity = Annotated[int, Field(gt=0, le=1_000_000, strict=True)]
PositiveAmount = Annotated[int, Field(gt=0, le=MAX_MINOR, strict=True)]


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: Annotated[str, Field(min_length=1, max_length=128)]
    quantity: Quantity
    unit_price_minor: MinorAmount


class OrderIn(BaseModel):
    """An order as the storefront posts it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: Key
    seller_id: Key
    buyer_ref: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    currency: Currency
    total_minor: MinorAmount
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=1000)]
    placed_at: UtcTimestamp | None = None
    status: Literal["placed", "completed"] = "placed"
    completed_at: UtcTimestamp | None = None

    def canonical(self) -> dict[str, Any]:
        """What the request means, for the idempotency hash (datetimes already in UTC)."""
        return self.model_dump()


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    orders: Annotated[list[OrderIn], Field(min_length=1, max_length=1000)]


class BatchOut(BaseModel):
    accepted: int


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    completed_at: UtcTimestamp | None = None


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    refund_id: Key
    amount_minor: PositiveAmount


class OrderOut(BaseModel):
    order_id: str
    seller_id: str
    buyer_ref: str | None
    currency: str
    total_minor: int
    items: list[OrderItem]
    placed_at: datetime
    status: Literal["placed", "completed", "refunded", "cancelled"]
    completed_at: datetime | None
    cancelled_at: datetime | None
    refunded_minor: int


class RefundOut(BaseModel):
    refund_id: str
    order_id: str
    amount_minor: int
    refunded_total_minor: int
    currency: str
    status: Literal["completed", "refunded"]
    created_at: datetime
