"""The leaf encoding every log of the project uses: canonical JSON and its timestamps.

A leaf is canonical JSON: UTF-8, keys sorted, no spaces, integers as JSON integers,
timestamps as RFC 3339 UTC with exactly six fractional digits and ``Z``
(``2025-01-31T12:00:00.000000Z``), UUIDs lower-case with hyphens. A service's log module
builds its records' leaves with these two functions, so every log reads the same way and a
verifier needs one rule for all of them (docs/LOG.md). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson


def canonical_json(value: Mapping[str, Any]) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC, microseconds always present, ``Z``."""
    if at.tzinfo is None:
        raise ValueError("a log timestamp must be timezone-aware")
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
