"""The events between the services: topics, the envelope, the event types and models.

These are the wire format between services, so they live here; the logic that reacts to
an event lives in the service that consumes it.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.money import Currency, MinorAmount

SCHEMA_VERSION = 1

TOPIC_ORDERS = "orders.lifecycle"
TOPIC_LEDGER = "donations.ledger"
DLQ_SUFFIX = ".dlq"
TOPICS = (TOPIC_ORDERS, TOPIC_LEDGER)

# The event types: the one place their names are spelled (the models' ``type`` literals
# are checked against these by mypy).
OrderCompletedType = Literal["order.completed"]
OrderRefundedType = Literal["order.refunded"]
OrderCancelledType = Literal["order.cancelled"]
DonationRecordedType = Literal["donation.recorded"]
DonationPostedType = Literal["donation.posted"]
ORDER_COMPLETED: Final[OrderCompletedType] = "order.completed"
ORDER_REFUNDED: Final[OrderRefundedType] = "order.refunded"
ORDER_CANCELLED: Final[OrderCancelledType] = "order.cancelled"
DONATION_RECORDED: Final[DonationRecordedType] = "donation.recorded"
DONATION_POSTED: Final[DonationPostedType] = "donation.posted"
ORDER_EVENT_TYPES = frozenset({ORDER_COMPLETED, ORDER_REFUNDED, ORDER_CANCELLED})


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields every event carries; consumers tolerate extra fields and unknown types."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: uuid.UUID
    type: str
    schema_version: int = SCHEMA_VERSION
    occurred_at: datetime


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = SCHEMA_VERSION
    occurred_at: datetime = Field(default_factory=utcnow)


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    item_id: str
    quantity: int
    unit_price_minor: int


class OrderSnapshot(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    order_id: str
    seller_id: str
    currency: Currency
    total_minor: MinorAmount
    items: list[OrderItem]
    placed_at: datetime
    completed_at: datetime | None = None


class OrderCompleted(_Event):
    type: OrderCompletedType = ORDER_COMPLETED
    order: OrderSnapshot


class OrderRefunded(_Event):
    type: OrderRefundedType = ORDER_REFUNDED
    order_id: str
    seller_id: str
    refund_id: str
    amount_minor: MinorAmount
    refunded_total_minor: MinorAmount
    total_minor: MinorAmount
    currency: Currency
    placed_at: datetime


class OrderCancelled(_Event):
    type: OrderCancelledType = ORDER_CANCELLED
    order_id: str
    seller_id: str


class LedgerEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    entry_id: uuid.UUID
    order_id: str
    seller_id: str
    project_id: uuid.UUID
    # "match"/"match_reversal": a sponsor campaign's money, with its campaign_id and no
    # rule_version; accruals and reversals have campaign_id null (or absent)
    kind: Literal["accrual", "reversal", "match", "match_reversal"]
    amount_minor: MinorAmount
    currency: Currency
    rule_version: int | None
    recorded_at: datetime
    campaign_id: str | None = None
    # Accruals: when the order's return window closes (the donation is final then).
    available_on: datetime | None = None


class DonationRecorded(_Event):
    type: DonationRecordedType = DONATION_RECORDED
    entry: LedgerEntry


class DonationPosted(_Event):
    """An order's donation, final after its return window: emitted once per order with a
    ledger entry (``posted_minor`` may be 0). ``occurred_at`` is ``posted_at``."""

    type: DonationPostedType = DONATION_POSTED
    order_id: str
    seller_id: str
    project_id: uuid.UUID
    currency: Currency
    posted_minor: MinorAmount
    posted_at: datetime


# Any event of ``orders.lifecycle``, told apart by its ``type``.
OrderLifecycleEvent = Annotated[
    OrderCompleted | OrderRefunded | OrderCancelled, Field(discriminator="type")
]
order_event_adapter: TypeAdapter[OrderCompleted | OrderRefunded | OrderCancelled] = TypeAdapter(
    OrderLifecycleEvent
)


def new_event_ids(count: int) -> list[str]:
    """``count`` random (version 4) event ids as strings, from one ``os.urandom`` call:
    a quarter of the cost of ``str(uuid.uuid4())`` each, for payloads built in bulk."""
    raw = bytearray(os.urandom(16 * count))
    for i in range(0, 16 * count, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[j : j + 8]}-{h[j + 8 : j + 12]}-{h[j + 12 : j + 16]}-"
        f"{h[j + 16 : j + 20]}-{h[j + 20 : j + 32]}"
        for j in range(0, 32 * count, 32)
    ]


def encode(event: BaseModel) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


def decode_envelope(raw: bytes) -> tuple[Envelope, dict[str, Any]]:
    """Parse the common fields; raises ValueError (or pydantic's) on anything malformed."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("event is not a JSON object")
    return Envelope.model_validate(data), data
