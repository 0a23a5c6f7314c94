"""Keyset pagination: opaque list cursors and the ``limit + 1`` page split.

A cursor is the position of the last item of a page (JSON, base64url without padding);
a list reads ``limit + 1`` rows after it, and the extra row only says whether there is a
next page. A cursor this module did not write is a 422 on the ``cursor`` field, and so
is one whose position could not be a row's: an integer beyond its column's type or a
timestamp outside the range rows are written in (``cursor_int``, ``cursor_timestamp``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson

from shared.problems import Invalid
from shared.types import EARLIEST, LATEST

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1

Row = TypeVar("Row")


class InvalidCursor(Invalid):
    def __init__(self) -> None:
        super().__init__([("cursor", "not a cursor returned by this list")])


def encode_cursor(position: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    """The position ``encode_cursor`` wrote; ``InvalidCursor`` for anything else (callers
    that check the position's shape raise it too)."""
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidCursor() from exc


def cursor_int(position: Any, maximum: int) -> int:
    """A decoded position that must be an integer column's value in ``0..maximum``
    (``INT4_MAX`` for ``integer``, ``INT8_MAX`` for ``bigint``)."""
    if not isinstance(position, int) or isinstance(position, bool):
        raise InvalidCursor()
    if not 0 <= position <= maximum:
        raise InvalidCursor()
    return position


def cursor_timestamp(position: Any) -> datetime:
    """A decoded ISO 8601 timestamp with a zone, within the range rows are written in."""
    if not isinstance(position, str):
        raise InvalidCursor()
    try:
        parsed = datetime.fromisoformat(position)
    except ValueError as exc:
        raise InvalidCursor() from exc
    if parsed.tzinfo is None or not EARLIEST <= parsed <= LATEST:
        raise InvalidCursor()
    return parsed


def split_page(rows: Sequence[Row], limit: int) -> tuple[Sequence[Row], bool]:
    """Rows fetched with ``limit + 1``: the page, and whether more rows follow."""
    return rows[:limit], len(rows) > limit
