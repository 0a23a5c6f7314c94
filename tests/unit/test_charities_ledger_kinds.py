"""Parsing the v1.1 ledger: matches are kept but not folded, postings are parsed once per
order, unknown entry kinds are skipped and counted, bad postings are dead letters."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from services.charities.consumer import parse_ledger


def _record(value: dict[str, Any], offset: int) -> ConsumerRecord:
    raw = orjson.dumps(value)
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=raw,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(raw),
        headers=(),
    )


def _envelope(type_: str, **body: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "schema_version": 1,
        "occurred_at": "2031-01-01T00:00:00Z",
        **body,
    }


def _entry(kind: str, amount: int, campaign_id: str | None = None) -> dict[str, Any]:
    return _envelope(
        "donation.recorded",
        entry={
            "entry_id": str(uuid.uuid4()),
            "order_id": "o-1",
            "seller_id": "s-1",
            "project_id": str(uuid.uuid4()),
            "kind": kind,
            "amount_minor": amount,
            "currency": "CNY",
            "rule_version": None,
            "recorded_at": "2031-01-01T00:00:00Z",
            "available_on": "2031-01-08T00:00:00Z" if kind == "accrual" else None,
            "campaign_id": campaign_id,
        },
    )


def _posted(order_id: str, posted_minor: Any = 10) -> dict[str, Any]:
    return _envelope(
        "donation.posted",
        order_id=order_id,
        seller_id="s-1",
        project_id=str(uuid.uuid4()),
        currency="CNY",
        posted_minor=posted_minor,
        posted_at="2031-01-09T00:00:00Z",
    )


def test_kinds_postings_and_unknowns() -> None:
    records = [
        _record(_entry("accrual", 10), 0),
        _record(_entry("match", 4, "camp-1"), 1),
        _record(_entry("match_reversal", 1, "camp-1"), 2),
        _record(_entry("bonus", 99), 3),  # a kind this service does not know
        _record(_posted("o-1"), 4),
        _record(_posted("o-1"), 5),  # redelivered in the same batch
        _record(_posted("o-2", posted_minor=-5), 6),  # invalid
    ]
    parsed = parse_ledger(records)
    assert list(parsed.rows.amount_minor) == [10, 4, 1]  # matches are folded too
    assert list(parsed.rows.kind) == ["accrual", "match", "match_reversal"]
    assert list(parsed.rows.campaign_id) == [None, "camp-1", "camp-1"]
    assert parsed.rows.available_on[0] is not None
    assert list(parsed.postings.order_id) == ["o-1"]
    assert parsed.skipped == 0  # no event of another type
    assert parsed.unknown_kinds == 1  # the "bonus" entry
    assert parsed.duplicates == 1
    assert [d.record.offset for d in parsed.dead] == [6]
