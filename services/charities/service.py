"""Registry rules, ledger parsing and totals shaping: the logic between HTTP and SQL.

Decisions users can rely on:
- A charity's ``registration_no`` and a project's name within its charity are natural
  keys: creating the same one again returns the existing one with 200; the same key with
  different fields is 409.
- Closing a closed project is a retry and returns it unchanged (200).
- ``donation_count`` counts accruals; a reversal adds to ``reversed_minor`` and leaves
  the count alone (the donation happened; part or all of it was given back).
- ``seller_count`` counts distinct sellers with at least one accrual to the project.
- Entries for projects the registry does not know (yet) are totalled anyway: the ledger
  is the source of truth and the registry may lag; such totals appear in ``/v1/totals``
  without a name and are served by ``/v1/projects/{id}/totals``.
- ``as_of`` is the time the totals last changed (the project's creation time while it has
  none), so a response and its strong ETag stay byte-identical until the data changes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from services.charities import repository
from services.charities.repository import Db, EntryColumns, Row
from services.charities.schemas import CharityCreate, ProjectCreate
from shared.events import LedgerEntry, decode_envelope
from shared.kafka import DeadLetter, Record
from shared.problems import conflict, not_found, unprocessable

LEDGER_EVENT = "donation.recorded"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# --- pagination -------------------------------------------------------------------------


def encode_cursor(created_at: datetime, key: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), str(key)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, key = orjson.loads(raw)
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            raise ValueError("naive timestamp")
        return parsed, uuid.UUID(key)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise unprocessable("cursor", "not a cursor returned by this list") from exc


def page(rows: Sequence[Row], limit: int, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """Rows fetched with ``limit + 1``: the page and the cursor of the next one."""
    items = [dict(r) for r in rows[:limit]]
    if len(rows) > limit:
        last = items[-1]
        return items, encode_cursor(last["created_at"], last[key])
    return items, None


def parse_id(value: str, what: str) -> uuid.UUID:
    """A path id: anything that is not a UUID names nothing, so it is a 404."""
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise not_found(what, value) from exc


# --- registry ---------------------------------------------------------------------------


async def create_charity(db: Db, body: CharityCreate) -> tuple[dict[str, Any], bool]:
    """The charity and whether it was created now (False: a retry of an earlier create)."""
    row = await repository.insert_charity(db, uuid.uuid4(), body.name, body.registration_no)
    if row is not None:
        return dict(row), True
    assert body.registration_no is not None
    existing = await repository.charity_by_registration_no(db, body.registration_no)
    if existing is None:  # pragma: no cover - registration numbers are never deleted
        raise conflict("charity was created concurrently; retry")
    if existing["name"] != body.name:
        raise conflict(
            f"registration_no {body.registration_no!r} belongs to charity "
            f"{existing['charity_id']} named {existing['name']!r}",
            charity_id=str(existing["charity_id"]),
        )
    return dict(existing), False


async def get_charity(db: Db, charity_id: str) -> dict[str, Any]:
    row = await repository.get_charity(db, parse_id(charity_id, "charity"))
    if row is None:
        raise not_found("charity", charity_id)
    return dict(row)


async def create_project(
    db: Db, charity_id: str, body: ProjectCreate
) -> tuple[dict[str, Any], bool]:
    charity = await get_charity(db, charity_id)
    row = await repository.insert_project(
        db,
        uuid.uuid4(),
        charity["charity_id"],
        body.name,
        body.description,
        body.currency,
        body.goal_minor,
    )
    if row is not None:
        return dict(row), True
    existing = await repository.project_by_name(db, charity["charity_id"], body.name)
    if existing is None:  # pragma: no cover - projects are never deleted
        raise conflict("project was created concurrently; retry")
    same = (existing["description"], existing["currency"], existing["goal_minor"]) == (
        body.description,
        body.currency,
        body.goal_minor,
    )
    if not same:
        raise conflict(
            f"charity {charity_id} already has a project named {body.name!r} "
            f"({existing['project_id']}) with other details",
            project_id=str(existing["project_id"]),
        )
    return dict(existing), False


async def get_project(db: Db, project_id: str) -> dict[str, Any]:
    row = await repository.get_project(db, parse_id(project_id, "project"))
    if row is None:
        raise not_found("project", project_id)
    return dict(row)


async def close_project(db: Db, project_id: str) -> dict[str, Any]:
    row = await repository.close_project(db, parse_id(project_id, "project"))
    if row is None:
        raise not_found("project", project_id)
    return dict(row)


# --- ledger -> totals ---------------------------------------------------------------------


class _LedgerEvent(BaseModel):
    """Only what folding needs of a ``donation.recorded`` event: half the parsing cost of
    the full event model (the envelope is checked only when this fails)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["donation.recorded"]
    entry: LedgerEntry


@dataclass(frozen=True)
class ParsedBatch:
    entries: EntryColumns
    dead: list[DeadLetter]
    skipped: int  # events of other types
    duplicates: int  # the same entry twice in this batch


def parse_ledger(records: Sequence[Record]) -> ParsedBatch:
    """Splits a batch into ledger entries (first occurrence of each entry_id), dead letters
    (unparseable), and skipped events of other types."""
    seen: set[uuid.UUID] = set()
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    entry_id, project_id, seller_id, currency, is_accrual, amount, recorded_at = columns
    dead: list[DeadLetter] = []
    skipped = duplicates = 0
    for record in records:
        raw = record.value
        if raw is None:
            dead.append(DeadLetter(record, "empty message value"))
            continue
        try:
            entry = _LedgerEvent.model_validate_json(raw).entry
        except ValidationError as exc:
            try:
                envelope, _ = decode_envelope(raw)
            except (ValueError, ValidationError) as env_exc:
                dead.append(DeadLetter(record, f"not an event: {_first_line(env_exc)}"))
                continue
            if envelope.type != LEDGER_EVENT:
                skipped += 1
                continue
            dead.append(DeadLetter(record, f"invalid {LEDGER_EVENT}: {_first_line(exc)}"))
            continue
        if entry.entry_id in seen:
            duplicates += 1
            continue
        seen.add(entry.entry_id)
        entry_id.append(entry.entry_id)
        project_id.append(entry.project_id)
        seller_id.append(entry.seller_id)
        currency.append(entry.currency)
        is_accrual.append(entry.kind == "accrual")
        amount.append(entry.amount_minor)
        recorded_at.append(entry.recorded_at)
    return ParsedBatch(
        EntryColumns(entry_id, project_id, seller_id, currency, is_accrual, amount, recorded_at),
        dead,
        skipped,
        duplicates,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[:3])[:500]


# --- totals responses ---------------------------------------------------------------------


def _zero_totals() -> dict[str, Any]:
    return {
        "donated_minor": 0,
        "reversed_minor": 0,
        "net_minor": 0,
        "donation_count": 0,
        "seller_count": 0,
        "last_donation_at": None,
    }


def shape_totals(row: Row | dict[str, Any]) -> dict[str, Any]:
    donated = int(row["donated_minor"])
    reversed_ = int(row["reversed_minor"])
    return {
        "donated_minor": donated,
        "reversed_minor": reversed_,
        "net_minor": donated - reversed_,
        "donation_count": int(row["donation_count"]),
        "seller_count": int(row["seller_count"]),
        "last_donation_at": row["last_donation_at"],
    }


def project_totals_body(project_id: str, rows: Sequence[Row]) -> dict[str, Any]:
    """The project's totals in its own currency (zeros if none yet); 404 if the project is
    neither registered nor seen in the ledger."""
    registered = rows and rows[0]["registered"] is not None
    totals = [r for r in rows if r["currency"] is not None]
    if not registered and not totals:
        raise not_found("project", project_id)
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
        "as_of": row["updated_at"],
    }


def charity_totals_body(charity_id: uuid.UUID, rows: Sequence[Row]) -> dict[str, Any]:
    items = [
        {
            "charity_id": charity_id,
            "currency": r["currency"],
            **shape_totals(r),
            "as_of": r["updated_at"],
        }
        for r in rows
    ]
    as_of = max((r["updated_at"] for r in rows), default=EPOCH)
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
            "donation_count": int(r["donation_count"]),
        }
        for r in rows
    ]


def check_range(start: date, end: date, max_days: int = 3660) -> None:
    if end < start:
        raise unprocessable("to", "must not be before 'from'")
    if (end - start).days > max_days:
        raise unprocessable("to", f"a range spans at most {max_days} days")


def _json_default(value: Any) -> str:
    if isinstance(value, uuid.UUID):  # asyncpg's own UUID type, which orjson does not know
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, default=_json_default, option=orjson.OPT_UTC_Z)


def body_etag(body: bytes) -> str:
    """A strong ETag: equal bodies, equal tags, and any change of the data changes it."""
    return '"h' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


# --- a tiny read cache --------------------------------------------------------------------


@dataclass
class Cached:
    etag: str
    body: bytes
    token: Any  # what the loader compares to decide whether to rebuild (a version)
    fresh_until: float


class ResponseCache:
    """Keeps the last (ETag, body) of each totals URL for ``ttl`` seconds, one loader at a
    time per URL, so a room of dashboards polling every second costs the database a few
    cheap queries per second instead of one per request."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[str, Cached] = {}
        self._loading: dict[str, asyncio.Future[Cached]] = {}

    def fresh(self, key: str) -> Cached | None:
        cached = self._entries.get(key)
        if cached is not None and cached.fresh_until > time.monotonic():
            return cached
        return None

    async def get(self, key: str, load: Callable[[Cached | None], Awaitable[Cached]]) -> Cached:
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and cached.fresh_until > now:
            return cached
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Cached] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            fresh = await load(cached)
            fresh.fresh_until = time.monotonic() + self.ttl
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = fresh
            future.set_result(fresh)
            return fresh
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._loading[key]
