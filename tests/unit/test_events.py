from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from shared.events import (
    OrderCompleted,
    OrderItem,
    OrderLifecycleEvent,
    OrderSnapshot,
    ValidationError,
    decode_envelope,
    encode,
    new_event_ids,
)
from shared.kafka import kafka_partitioner


def completed() -> OrderCompleted:
    placed = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)
    return OrderCompleted(
        order=OrderSnapshot(
            order_id="o-1",
            seller_id="s-1",
            currency="CNY",
            total_minor=300,
            items=[OrderItem(item_id="i", quantity=3, unit_price_minor=100)],
            placed_at=placed,
            completed_at=placed,
        )
    )


def test_an_event_survives_the_wire_with_its_id_and_schema_version() -> None:
    event = completed()
    raw = encode(event)
    envelope, data = decode_envelope(raw)
    assert envelope.event_id == event.event_id
    assert envelope.type == "order.completed"
    assert data["schema_version"] == 1
    assert msgspec.convert(data, OrderLifecycleEvent) == event


@given(st.integers(0, 300))
def test_bulk_event_ids_are_distinct_canonical_version_4_uuids(count: int) -> None:
    ids = new_event_ids(count)
    assert len(ids) == count
    assert len(set(ids)) == count
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_decode_rejects_non_objects_and_missing_fields() -> None:
    with pytest.raises(ValueError, match="object"):
        decode_envelope(b"[1, 2]")
    with pytest.raises(orjson.JSONDecodeError):
        decode_envelope(b"{not json")
    with pytest.raises(ValidationError):
        decode_envelope(b'{"type": "order.completed"}')


@given(st.binary(min_size=0, max_size=64), st.integers(1, 64))
def test_our_partitioner_places_keys_exactly_where_kafkas_default_does(
    key: bytes, partitions: int
) -> None:
    every = list(range(partitions))
    assert kafka_partitioner(key, every, every) == DefaultPartitioner()(key, every, every)
