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
    order_event_decoder,
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


def _completed_with(**order: object) -> bytes:
    data = orjson.loads(encode(completed()))
    data["order"].update(order)
    return orjson.dumps(data)


@pytest.mark.parametrize(
    "change",
    [
        {"currency": "XXX"},  # not a supported currency
        {"currency": "cny"},
        {"total_minor": -1},
        {"total_minor": 10**15 + 1},  # past shared.money's MAX_MINOR
        {"total_minor": 300.0},  # amounts are integers, never floats
        {"total_minor": "300"},  # nor strings
        {"total_minor": True},
        {"placed_at": "2026-11-11T00:00:00"},  # an instant without its offset
        {"items": [{"item_id": "i", "quantity": "3", "unit_price_minor": 100}]},
        {"order_id": None},
    ],
)
def test_decoding_an_order_event_is_strict(change: dict[str, object]) -> None:
    assert isinstance(order_event_decoder.decode(_completed_with()), OrderCompleted)
    with pytest.raises(ValidationError):
        order_event_decoder.decode(_completed_with(**change))


def test_the_type_tag_chooses_the_event_and_an_unknown_type_is_invalid() -> None:
    raw = encode(completed())
    event = order_event_decoder.decode(raw)
    assert isinstance(event, OrderCompleted)
    assert event.type == "order.completed"
    assert orjson.loads(raw)["type"] == "order.completed"
    other = orjson.loads(raw)
    other["type"] = "order.shipped"
    with pytest.raises(ValidationError):
        order_event_decoder.decode(orjson.dumps(other))
    # extra fields from a newer producer are tolerated
    newer = orjson.loads(raw)
    newer["order"]["gift_wrap"] = True
    newer["trace"] = "x"
    assert order_event_decoder.decode(orjson.dumps(newer)).event_id == event.event_id


@given(st.binary(min_size=0, max_size=64), st.integers(1, 64))
def test_our_partitioner_places_keys_exactly_where_kafkas_default_does(
    key: bytes, partitions: int
) -> None:
    every = list(range(partitions))
    assert kafka_partitioner(key, every, every) == DefaultPartitioner()(key, every, every)
