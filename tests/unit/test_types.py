"""The shared input types and the cursor codec refuse what PostgreSQL could not take."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.pagination import (
    INT4_MAX,
    INT8_MAX,
    InvalidCursor,
    cursor_int,
    cursor_timestamp,
    decode_cursor,
    encode_cursor,
)
from shared.types import Day, Text, Timestamp

TEXT = TypeAdapter(Text)
TIMESTAMP = TypeAdapter(Timestamp)
DAY = TypeAdapter(Day)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


@given(st.text(st.characters(codec=None, exclude_categories=())))
def test_text_is_accepted_exactly_when_postgresql_can_store_it(value: str) -> None:
    if _encodable(value):
        assert TEXT.validate_python(value) == value
    else:
        with pytest.raises(ValidationError):
            TEXT.validate_python(value)


@pytest.mark.parametrize("value", ["\x00", "a\x00", "\ud800", "é\udfff", "\U0001f600\ud83d"])
def test_unstorable_text_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="NUL|surrogate"):
        TEXT.validate_python(value)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]
        ),
    )
)
def test_timestamps_outside_2000_to_2100_are_refused(value: datetime) -> None:
    inside = datetime(2000, 1, 1, tzinfo=UTC) <= value <= datetime(2100, 1, 1, tzinfo=UTC)
    if inside:
        parsed = TIMESTAMP.validate_python(value.isoformat())
        assert parsed == value
        assert parsed.tzinfo == UTC
    else:
        with pytest.raises(ValidationError):
            TIMESTAMP.validate_python(value.isoformat())


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2100-01-01T00:00:01Z"]
)
def test_timestamps_whose_utc_overflows_are_refused_with_the_range(value: str) -> None:
    with pytest.raises(ValidationError, match="must be from 2000-01-01T00:00:00"):
        TIMESTAMP.validate_python(value)
    with pytest.raises(ValidationError, match="must be from 2000-01-01T00:00:00"):
        TIMESTAMP.validate_json(f'"{value}"')


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0001-01-01", False),
        ("1999-12-31", False),
        ("2000-01-01", True),
        ("2100-01-01", True),
        ("2100-01-02", False),
        ("9999-12-31", False),
    ],
)
def test_days_are_bounded(value: str, ok: bool) -> None:
    if ok:
        assert DAY.validate_python(value) == date.fromisoformat(value)
    else:
        with pytest.raises(ValidationError):
            DAY.validate_python(value)


@pytest.mark.parametrize("maximum", [INT4_MAX, INT8_MAX])
def test_integer_positions_stay_within_their_column(maximum: int) -> None:
    assert cursor_int(decode_cursor(encode_cursor(maximum)), maximum) == maximum
    assert cursor_int(0, maximum) == 0
    for bad in (maximum + 1, -1, 1.0, True, "1", None, [1]):
        with pytest.raises(InvalidCursor):
            cursor_int(bad, maximum)


def test_timestamp_positions_stay_within_the_written_range() -> None:
    now = datetime.now(UTC)
    assert cursor_timestamp(now.isoformat()) == now
    for bad in (
        "0001-01-01T00:00:00+00:00",
        "9999-12-31T23:59:59-23:59",
        "2030-01-01T00:00:00",
        "x",
        5,
        None,
    ):
        with pytest.raises(InvalidCursor):
            cursor_timestamp(bad)
