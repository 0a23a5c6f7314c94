"""Constrained input types every request model and parameter uses.

PostgreSQL cannot store a NUL character in ``text`` and cannot encode a lone surrogate
as UTF-8; its ``timestamptz`` and ``date`` overflow far from today. An input that would
fail there is refused here, at validation, as a 422 naming the field, so no such value
reaches a query. ``Text`` is every free-text field and path id, ``Timestamp`` every
client-given instant and ``Day`` every date parameter.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

# Instants and days a client may give: wide enough for any real order, narrow enough
# that date arithmetic on them (ranges, time zones, clock skew) cannot overflow.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
EARLIEST_DAY = EARLIEST.date()
LATEST_DAY = LATEST.date()

# The UTF-16 surrogate range: a str holding one cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> str:
    """``value`` unless PostgreSQL could not store it as text."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    # ASCII (almost every id and key) holds no surrogate: skip the scan.
    if not value.isascii() and _SURROGATE.search(value) is not None:
        raise ValueError("must not contain a lone surrogate (not encodable as UTF-8)")
    return value


def bounded_timestamp(value: datetime) -> datetime:
    """``value`` in UTC, if it lies from ``EARLIEST`` to ``LATEST`` (both included)."""
    # Converted first, then compared: two datetimes with the same tzinfo object compare
    # without asking it for offsets, and a parsed value's tzinfo (pydantic's) answers
    # ``utcoffset`` slowly. Outside years 1 to 9999 in UTC, the conversion overflows.
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must be from {EARLIEST.isoformat()} to {LATEST.isoformat()}")
    return utc


def bounded_day(value: date) -> date:
    if not EARLIEST_DAY <= value <= LATEST_DAY:
        raise ValueError(f"must be from {EARLIEST_DAY} to {LATEST_DAY}")
    return value


Text = Annotated[str, AfterValidator(storable_text)]
"""Any string a client sends: a body field, a path id, a query value."""

Timestamp = Annotated[AwareDatetime, AfterValidator(bounded_timestamp)]
"""An RFC 3339 instant with a zone (a naive one is refused) in the sane range, as UTC."""

Day = Annotated[date, AfterValidator(bounded_day)]
"""A calendar date in the sane range (query parameters such as ``from`` / ``to``)."""
