"""Request and response bodies of the orders API: orders, batches, moves and refunds."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from shared.money import MAX_MINOR, MINOR_UNIT_EXPONENT, Currency, MinorAmount
from shared.types import Text, Timestamp, bounded_timestamp

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


# -- the batch body's fast decoding ----------------------------------------------------
#
# ``decode_batch`` reads the body of ``POST /v1/orders/batch`` with msgspec into plain
# structs, a narrower schema than ``BatchIn``'s: everything it accepts ``BatchIn`` accepts
# as the same orders (the same ``canonical()``, so the same request hashes and rows), and
# whatever it refuses (another timestamp form, any text it is unsure of, any error) it
# leaves to ``BatchIn``, which answers it as before. tests/unit/test_orders_batch_body.py
# checks both on random bodies.

# Lengths are checked by msgspec; the characters of all keys, and of all free text, by
# one regular expression each over the batch's values joined (a key is 1 to 64 of
# ``[A-Za-z0-9_.:-]``; text holds no NUL and no lone surrogate, as ``storable_text``).
_FAST_KEY = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_FAST_TEXT = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_NOT_KEY = re.compile(r"[^A-Za-z0-9_.:-]")
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_FAST_QUANTITY = Annotated[int, msgspec.Meta(gt=0, le=1_000_000)]
_FAST_MINOR = Annotated[int, msgspec.Meta(ge=0, le=MAX_MINOR)]
# RFC 3339 as storefronts send it: ``T``, seconds, at most 6 digits of fraction, ``Z`` or
# ``+hh:mm``. Both parsers read these alike; any other form goes to pydantic.
_FAST_STAMP_FORM = re.compile(
    r"\A[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)


class _Refused(Exception):
    """A value ``decode_batch`` leaves to pydantic."""


class FastItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One line of an order, as ``decode_batch`` reads it (``OrderItem``'s fields)."""

    item_id: _FAST_TEXT
    quantity: _FAST_QUANTITY
    unit_price_minor: _FAST_MINOR


class _WireOrder(msgspec.Struct, forbid_unknown_fields=True):
    order_id: _FAST_KEY
    seller_id: _FAST_KEY
    currency: str
    total_minor: _FAST_MINOR
    items: Annotated[list[FastItem], msgspec.Meta(min_length=1, max_length=ORDER_MAX_ITEMS)]
    buyer_ref: _FAST_TEXT | None = None
    placed_at: str | None = None
    status: Literal["placed", "completed"] = "placed"
    completed_at: str | None = None


class _WireBatch(msgspec.Struct, forbid_unknown_fields=True):
    orders: Annotated[list[_WireOrder], msgspec.Meta(min_length=1, max_length=BATCH_MAX_ORDERS)]


class FastOrder(msgspec.Struct, frozen=True):
    """An order of a batch read by ``decode_batch``: ``OrderIn``'s fields and values."""

    order_id: str
    seller_id: str
    buyer_ref: str | None
    currency: str
    total_minor: int
    items: list[FastItem]
    placed_at: datetime | None
    status: Literal["placed", "completed"]
    completed_at: datetime | None

    def canonical(self) -> dict[str, Any]:
        """``OrderIn.canonical()`` of the same order: the same keys, order and values."""
        return {
            "order_id": self.order_id,
            "seller_id": self.seller_id,
            "buyer_ref": self.buyer_ref,
            "currency": self.currency,
            "total_minor": self.total_minor,
            "items": msgspec.to_builtins(self.items),
            "placed_at": self.placed_at,
            "status": self.status,
            "completed_at": self.completed_at,
        }


_BATCH_DECODER = msgspec.json.Decoder(_WireBatch)


def _stamp(value: str | None, known: dict[str | None, datetime | None]) -> datetime | None:
    """``value`` as ``Timestamp`` reads it (``known``: the batch's values read so far)."""
    try:
        return known[value]
    except KeyError:
        pass
    assert value is not None
    if _FAST_STAMP_FORM.match(value) is None:
        raise _Refused
    try:
        stamp = known[value] = bounded_timestamp(datetime.fromisoformat(value))
    except ValueError as exc:  # not a date (30 February), or out of range
        raise _Refused from exc
    return stamp


def decode_batch(body: bytes) -> list[FastOrder] | None:
    """The batch's orders, or None for a body to validate with ``BatchIn``."""
    try:
        wire = _BATCH_DECODER.decode(body)
        keys = "".join([k for o in wire.orders for k in (o.order_id, o.seller_id)])
        texts = "".join(
            [i.item_id for o in wire.orders for i in o.items]
            + [o.buyer_ref for o in wire.orders if o.buyer_ref is not None]
        )
        if _NOT_KEY.search(keys) is not None or _NOT_TEXT.search(texts) is not None:
            return None
        stamps: dict[str | None, datetime | None] = {None: None}
        return [
            FastOrder(
                order_id=o.order_id,
                seller_id=o.seller_id,
                buyer_ref=o.buyer_ref,
                currency=_currency(o.currency),
                total_minor=o.total_minor,
                items=o.items,
                placed_at=_stamp(o.placed_at, stamps),
                status=o.status,
                completed_at=_stamp(o.completed_at, stamps),
            )
            for o in wire.orders
        ]
    except (msgspec.ValidationError, msgspec.DecodeError, _Refused):
        return None


def _currency(code: str) -> str:
    if code not in MINOR_UNIT_EXPONENT:
        raise _Refused
    return code
