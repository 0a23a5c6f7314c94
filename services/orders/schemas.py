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


_ORDER_EXAMPLE: dict[str, Any] = {
    "order_id": "tb-20250601-0001",
    "seller_id": "shop-42",
    "buyer_ref": "buyer-981",
    "currency": "CNY",
    "total_minor": 5900,
    "items": [{"item_id": "green-tea-250g", "quantity": 2, "unit_price_minor": 2950}],
}


class OrderItem(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [{"item_id": "green-tea-250g", "quantity": 2, "unit_price_minor": 2950}]
        },
    )

    item_id: FreeText
    """The storefront's id of the item (1 to 128 characters)."""
    quantity: Quantity
    """How many units were bought (1 to 1,000,000)."""
    unit_price_minor: MinorAmount
    """Price of one unit in the currency's minor unit (0 to 10^15)."""


class OrderIn(BaseModel):
    """An order as the storefront posts it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [_ORDER_EXAMPLE]},
    )

    order_id: Key
    """The order's id, unique on the platform (1 to 64 of ``[A-Za-z0-9_.:-]``)."""
    seller_id: Key
    """The seller the order was placed with; the token must act for it."""
    buyer_ref: FreeText | None = None
    """The storefront's opaque reference of the buyer (1 to 128 characters)."""
    currency: Currency
    """ISO 4217 code of every amount of the order."""
    total_minor: MinorAmount
    """The order total in minor units: the sum of quantity * unit_price_minor."""
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=ORDER_MAX_ITEMS)]
    """The order's lines (1 to 1000)."""
    placed_at: Timestamp | None = None
    """When the order was placed (RFC 3339 with a zone, 2000 to 2100); default: now."""
    status: Literal["placed", "completed"] = "placed"
    """``completed`` records an order that completed already, in one call."""
    completed_at: Timestamp | None = None
    """When a ``completed`` order completed (only with that status); default: now."""

    def canonical(self) -> dict[str, Any]:
        """What the request means, for the idempotency hash (datetimes already in UTC)."""
        return self.model_dump()


class BatchIn(BaseModel):
    """Orders ingested all or nothing."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [{"orders": [_ORDER_EXAMPLE]}]},
    )

    orders: Annotated[list[OrderIn], Field(min_length=1, max_length=BATCH_MAX_ORDERS)]
    """1 to 1000 orders, each as ``POST /v1/orders`` takes it."""


class BatchOut(BaseModel):
    """What a batch did."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    accepted: int
    """Orders of the batch now stored (new ones and exact retries)."""


class CompleteIn(BaseModel):
    """Optional body of ``complete``."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [{"completed_at": "2025-06-03T10:00:00+08:00"}]},
    )

    completed_at: Timestamp | None = None
    """When the order completed (RFC 3339 with a zone, 2000 to 2100); default: now."""


class RefundIn(BaseModel):
    """A (partial) refund of a completed order."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [{"refund_id": "rf-0001", "amount_minor": 2950}]},
    )

    refund_id: Key
    """The refund's id, unique on the platform (the same form as an ``order_id``)."""
    amount_minor: PositiveAmount
    """Amount refunded in minor units (at least 1; all refunds at most the total)."""


class OrderOut(BaseModel):
    """An order as stored now."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    order_id: str
    """The order's id."""
    seller_id: str
    """The seller the order was placed with."""
    buyer_ref: str | None
    """The storefront's reference of the buyer, if it gave one."""
    currency: str
    """ISO 4217 code of every amount of the order."""
    total_minor: int
    """The order total in minor units."""
    items: list[OrderItem]
    """The order's lines."""
    placed_at: IsoTimestamp
    """When the order was placed (UTC)."""
    status: Literal["placed", "completed", "refunded", "cancelled"]
    """Where the order is: placed, then completed (then refunded), or cancelled."""
    completed_at: IsoTimestamp | None
    """When the order completed (UTC), if it did."""
    cancelled_at: IsoTimestamp | None
    """When the order was cancelled (UTC), if it was."""
    refunded_minor: int
    """Sum of the order's refunds in minor units."""


class RefundOut(BaseModel):
    """A refund as first recorded."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    refund_id: str
    """The refund's id."""
    order_id: str
    """The refunded order."""
    amount_minor: int
    """Amount of this refund in minor units."""
    refunded_total_minor: int
    """Sum of the order's refunds after this one."""
    currency: str
    """The order's currency."""
    status: Literal["completed", "refunded"]
    """The order's status after this refund (``refunded`` once fully refunded)."""
    created_at: IsoTimestamp
    """When the refund was recorded (UTC)."""
