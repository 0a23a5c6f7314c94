"""Totals as the API shows them: response bodies from total rows, their JSON bytes and
their strong ETags. Pure functions, no I/O.

Decisions users can rely on:
- ``donation_count`` counts accruals; a reversal adds to ``reversed_minor`` and leaves
  the count alone (the donation happened; part or all of it was given back).
- ``donated_minor`` and ``reversed_minor`` are the sellers' donations only; sponsors'
  matches are ``matched_minor`` (matches minus match reversals), and ``net_minor`` is
  ``donated_minor - reversed_minor + matched_minor``.
- ``seller_count`` counts distinct sellers with at least one accrual to the project.
- Entries for projects the registry does not know (yet) are totalled anyway: the ledger
  is the source of truth and the registry may lag; such totals appear in ``/v1/totals``
  without a name and are served by ``/v1/projects/{id}/totals``.
- ``as_of`` is the time the totals last changed (the project's creation time while it has
  none), so a response and its strong ETag stay byte-identical until the data changes.
- ``posted_minor`` is the net of the project's posted orders (final: nothing reverses it),
  ``pending_minor`` is the rest of ``net_minor``; ``disbursed_minor`` is what disbursements
  took and ``available_minor = posted_minor - disbursed_minor`` what they still may take.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from services.charities.repository import Row

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _zero_totals() -> dict[str, Any]:
    return {
        "donated_minor": 0,
        "reversed_minor": 0,
        "matched_minor": 0,
        "net_minor": 0,
        "donation_count": 0,
        "seller_count": 0,
        "last_donation_at": None,
        "pending_minor": 0,
        "posted_minor": 0,
        "disbursed_minor": 0,
        "available_minor": 0,
    }


def shape_totals(row: Row | dict[str, Any]) -> dict[str, Any]:
    donated = int(row["donated_minor"])
    reversed_ = int(row["reversed_minor"])
    matched = int(row["matched_minor"])
    net = donated - reversed_ + matched
    posted = int(row["posted_minor"])
    disbursed = int(row["disbursed_minor"])
    return {
        "donated_minor": donated,
        "reversed_minor": reversed_,
        "matched_minor": matched,
        "net_minor": net,
        "donation_count": int(row["donation_count"]),
        "seller_count": int(row["seller_count"]),
        "last_donation_at": row["last_donation_at"],
        "pending_minor": net - posted,
        "posted_minor": posted,
        "disbursed_minor": disbursed,
        "available_minor": posted - disbursed,
    }


def _changed_at(row: Row) -> datetime:
    """The later of the folded totals' and the posted/disbursed money's last change."""
    funds: datetime | None = row["funds_updated_at"]
    changed: datetime = row["updated_at"]
    return changed if funds is None else max(changed, funds)


def project_totals_body(rows: Sequence[Row]) -> dict[str, Any] | None:
    """The project's totals in its own currency (zeros if none yet); None if the project
    is neither registered nor seen in the ledger."""
    registered = rows and rows[0]["registered"] is not None
    totals = [r for r in rows if r["currency"] is not None]
    if not registered and not totals:
        return None
    if registered:
        currency = rows[0]["project_currency"]
        mine = [r for r in totals if r["currency"] == currency]
        if not mine:
            return {
                "project_id": rows[0]["registered"],
                "currency": currency,
                **_zero_totals(),
                "as_of": rows[0]["created_at"],
            }
        row = mine[0]
    else:
        row = max(totals, key=lambda r: (r["donation_count"], r["currency"]))
    return {
        "project_id": row["project_id"],
        "currency": row["currency"],
        **shape_totals(row),
        "as_of": _changed_at(row),
    }


def charity_totals_body(charity_id: uuid.UUID, rows: Sequence[Row]) -> dict[str, Any]:
    items = [
        {
            "charity_id": charity_id,
            "currency": r["currency"],
            **shape_totals(r),
            "as_of": _changed_at(r),
        }
        for r in rows
    ]
    as_of = max((_changed_at(r) for r in rows), default=EPOCH)
    return {"charity_id": charity_id, "items": items, "as_of": as_of}


def all_totals_body(rows: Sequence[Row], as_of: datetime) -> dict[str, Any]:
    items = [
        {
            "project_id": r["project_id"],
            "currency": r["currency"],
            **shape_totals(r),
            "as_of": r["as_of"],
            "name": r["name"],
            "charity_id": r["charity_id"],
            "charity_name": r["charity_name"],
            "goal_minor": r["goal_minor"],
            "status": r["status"],
        }
        for r in rows
    ]
    return {"items": items, "as_of": as_of}


def daily_body(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [
        {
            "date": r["day"],
            "donated_minor": int(r["donated_minor"]),
            "reversed_minor": int(r["reversed_minor"]),
            "matched_minor": int(r["matched_minor"]),
            "donation_count": int(r["donation_count"]),
        }
        for r in rows
    ]


def _json_default(value: Any) -> str:
    if isinstance(value, uuid.UUID):  # asyncpg's own UUID type, which orjson does not know
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, default=_json_default, option=orjson.OPT_UTC_Z)


def body_etag(body: bytes) -> str:
    """A strong ETag: equal bodies, equal tags, and any change of the data changes it."""
    return '"h' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
