"""The consumer's donation.recorded payloads are DonationRecorded events (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.donations.consumer import LedgerHandler
from services.donations.ledger import NewEntry
from services.donations.rules import entry_id
from shared.events import DonationRecorded


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
    event = DonationRecorded.model_validate_json(message.payload)
    assert event.occurred_at == at
    assert event.entry.model_dump() == {
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
    }


def test_entry_ids_are_stable_uuids_per_key() -> None:
    first = entry_id("o-1", "accrual")
    assert first == entry_id("o-1", "accrual")
    assert str(uuid.UUID(first)) == first
    assert len({first, entry_id("o-1", "refund:r1"), entry_id("o-2", "accrual")}) == 3
    # the separator keeps ("a", "b:c") and ("a:b", "c")-style keys apart
    assert entry_id("a", "bc") != entry_id("ab", "c")
