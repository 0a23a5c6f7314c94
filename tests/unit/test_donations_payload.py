"""The donation.recorded and donation.posted payloads parse as their events (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec

from services.donations.consumer import LedgerHandler
from services.donations.ledger import NewEntry
from services.donations.posting import posted_messages
from services.donations.rules import entry_id
from shared.events import DonationPosted, DonationRecorded, decode


def test_payload_is_a_donation_recorded_event() -> None:
    project = uuid.uuid4()
    entry = NewEntry(
        entry_id=entry_id("o-1", "refund:r1"),
        order_id="o-1",
        event_key="refund:r1",
        seller_id="s-1",
        project_id=project,
        kind="reversal",
        amount_minor=42,
        currency="CNY",
        rule_version=3,
        event_id=uuid.uuid4(),
    )
    at = datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    [message] = LedgerHandler(None, "x.donations.ledger")._messages([entry], at)  # type: ignore[arg-type]
    assert (message.topic, message.aggregate_id, message.type) == (
        "x.donations.ledger",
        "o-1",
        "donation.recorded",
    )
    event = decode(message.payload, DonationRecorded)
    assert event.occurred_at == at
    assert msgspec.structs.asdict(event.entry) == {
        "entry_id": uuid.UUID(entry.entry_id),
        "order_id": "o-1",
        "seller_id": "s-1",
        "project_id": project,
        "kind": "reversal",
        "amount_minor": 42,
        "currency": "CNY",
        "rule_version": 3,
        "recorded_at": at,
        "campaign_id": None,
        "available_on": None,
    }


def test_an_accrual_payload_carries_available_on() -> None:
    ends = datetime(2025, 5, 8, 12, 0, 0, 5, tzinfo=UTC)
    entry = NewEntry(
        entry_id=entry_id("o-2", "accrual"),
        order_id="o-2",
        event_key="accrual",
        seller_id="s-1",
        project_id=uuid.uuid4(),
        kind="accrual",
        amount_minor=7,
        currency="CNY",
        rule_version=1,
        event_id=uuid.uuid4(),
        available_on=ends,
    )
    at = datetime(2025, 5, 1, 12, 0, 1, tzinfo=UTC)
    [message] = LedgerHandler(None, "x.donations.ledger")._messages([entry], at)  # type: ignore[arg-type]
    event = decode(message.payload, DonationRecorded)
    assert (event.entry.kind, event.entry.amount_minor, event.entry.available_on) == (
        "accrual",
        7,
        ends,
    )
    assert b'"available_on":"2025-05-08T12:00:00.000005+00:00"' in message.payload


def test_posted_payload_is_a_donation_posted_event() -> None:
    project = uuid.uuid4()
    at = datetime(2025, 5, 8, 12, 0, 3, tzinfo=UTC)
    row = {
        "order_id": "o-3",
        "seller_id": "s-1",
        "project_id": project,
        "currency": "CNY",
        "posted_minor": 0,
        "posted_at": at,
    }
    [message] = posted_messages("x.donations.ledger", [row])  # type: ignore[list-item]
    assert (message.topic, message.aggregate_id, message.type) == (
        "x.donations.ledger",
        "o-3",
        "donation.posted",
    )
    event = decode(message.payload, DonationPosted)
    assert {
        "type": event.type,
        **{k: v for k, v in msgspec.structs.asdict(event).items() if k != "event_id"},
    } == {
        "type": "donation.posted",
        "schema_version": 1,
        "occurred_at": at,
        **row,
    }


def test_entry_ids_are_stable_uuids_per_key() -> None:
    first = entry_id("o-1", "accrual")
    assert first == entry_id("o-1", "accrual")
    assert str(uuid.UUID(first)) == first
    assert len({first, entry_id("o-1", "refund:r1"), entry_id("o-2", "accrual")}) == 3
    # the separator keeps ("a", "b:c") and ("a:b", "c")-style keys apart
    assert entry_id("a", "bc") != entry_id("ab", "c")
