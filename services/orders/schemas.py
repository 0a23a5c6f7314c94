"""Request and response bodies of the orders API: orders, batches, moves and refunds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from shared.money import MAX_MINOR, Currency, MinorAmount
from shared.types import Text, Timestamp

# Most orders one batch request may carry (and most items one order may list).
BATCH_MAX_ORDERS = 1000
ORDER_MAX_ITEMS = 1000
KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
Key = Annotated[Text, Field(min_length=1, max_length=64, pattern=KEY_PATTERN)]
FreeText = Annotated[Text, Field(min_length=1, max_length=128)]

Quantity = Annotated[int, Field(gt=0, le=1_000_000, strict=True)]
PositiveAmount = Annotated[int, Field(gt=0, le=MAX_MINOR, strict=True)]
# Responses write timestamps as ``datetime.isoformat`` does (``+00:00``, not ``Z``).
IsoTimestamp = Annotated[
    datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")
]


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: FreeText
    quantity: Quantity
    unit_price_minor: MinorAmount


class OrderIn(BaseModel):
    """An order as the storefront posts it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: Key
    seller_id: Key
    buyer_ref: FreeText | None = None
    currency: Currency
    total_minor: MinorAmount
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=ORDER_MAX_ITEMS)]
    placed_at: Timestamp | None = None
    status: Literal["placed", "completed"] = "placed"
    completed_at: Timestamp | None = None

    def canonical(self) -> dict[str, Any]:
        """What the request means, for the idempotency hash (datetimes already in UTC)."""
        return self.model_dump()


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    orders: Annotated[list[OrderIn], Field(min_length=1, max_length=BATCH_MAX_ORDERS)]


class BatchOut(BaseModel):
    accepted: int


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    completed_at: Timestamp | None = None


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
    placed_at: IsoTimestamp
    status: Literal["placed", "completed", "refunded", "cancelled"]
    completed_at: IsoTimestamp | None
    cancelled_at: IsoTimestamp | None
    refunded_minor: int


class RefundOut(BaseModel):
    refund_id: str
    order_id: str
    amount_minor: int
    refunded_total_minor: int
    currency: str
    status: Literal["completed", "refunded"]
    created_at: IsoTimestamp
