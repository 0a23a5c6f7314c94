"""Pure logic of the charities service: ledger parsing, cursors, ETags, response cache."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from services.charities.consumer import parse_ledger
from services.charities.service import Cached, ResponseCache, decode_cursor, encode_cursor
from services.charities.totals import body_etag
from shared.events import DonationRecorded, LedgerEntry, encode
from shared.problems import DomainError as Problem
from shared.web import etag_matches


def _record(value: bytes | None, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value or b""),
        headers=(),
    )


def _event(kind: str = "accrual", amount: int = 5, entry_id: uuid.UUID | None = None) -> bytes:
    """A ``donation.recorded`` event; matches carry a campaign and no rule version."""
    is_match = kind.startswith("match")
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": "donation.recorded",
            "schema_version": 1,
            "occurred_at": "2031-01-01T00:00:00Z",
            "entry": {
                "entry_id": str(entry_id or uuid.uuid4()),
                "order_id": "o-1",
                "seller_id": "s-1",
                "project_id": str(uuid.uuid4()),
                "kind": kind,
                "amount_minor": amount,
                "currency": "CNY",
                "rule_version": None if is_match else 1,
                "campaign_id": "camp-1" if is_match else None,
                "recorded_at": "2031-01-01T00:00:00Z",
            },
        }
    )


def test_the_shared_entry_model_parses_like_the_test_events() -> None:
    """The hand-built events above have the wire shape of the shared model's events."""
    entry_id = uuid.uuid4()
    shared = encode(
        DonationRecorded(
            entry=LedgerEntry(
                entry_id=entry_id,
                order_id="o-1",
                seller_id="s-1",
                project_id=uuid.uuid4(),
                kind="accrual",
                amount_minor=5,
                currency="CNY",
                rule_version=1,
                recorded_at=datetime(2031, 1, 1, tzinfo=UTC),
            )
        )
    )
    parsed = parse_ledger([_record(shared), _record(_event("accrual", 5))])
    assert list(parsed.rows.kind) == ["accrual", "accrual"]
    assert parsed.rows.entry_id[0] == entry_id


def test_parse_ledger_sorts_entries_dead_letters_and_skips() -> None:
    duplicate = uuid.uuid4()
    unknown_type = orjson.dumps(
        {"event_id": str(uuid.uuid4()), "type": "x.y", "occurred_at": "2031-01-01T00:00:00Z"}
    )
    bad_entry = orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": "donation.recorded",
            "occurred_at": "2031-01-01T00:00:00Z",
            "entry": {"amount_minor": -1},
        }
    )
    records = [
        _record(_event("accrual", 7, duplicate), 0),
        _record(b"\xff not json", 1),
        _record(unknown_type, 2),
        _record(_event("reversal", 3), 3),
        _record(_event("accrual", 7, duplicate), 4),
        _record(bad_entry, 5),
        _record(None, 6),
        _record(b"[1, 2]", 7),
        _record(_event("match", 4), 8),
        _record(_event("match_reversal", 2), 9),
        _record(_event("bonus", 9), 10),
    ]
    parsed = parse_ledger(records)
    assert list(parsed.rows.amount_minor) == [7, 3, 4, 2]
    assert list(parsed.rows.kind) == ["accrual", "reversal", "match", "match_reversal"]
    assert parsed.rows.entry_id[0] == duplicate
    assert parsed.skipped == 1
    assert parsed.unknown_kinds == 1
    assert parsed.duplicates == 1
    assert [d.record.offset for d in parsed.dead] == [1, 5, 6, 7]
    assert all(d.reason for d in parsed.dead)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["accrual", "reversal", "match", "match_reversal"]),
            st.integers(0, 10**12),
        ),
        max_size=30,
    ),
    st.integers(0, 3),
)
def test_parse_ledger_keeps_every_distinct_entry_once(
    entries: list[tuple[str, int]], repeats: int
) -> None:
    ids = [uuid.uuid4() for _ in entries]
    raw = [_event(kind, amount, i) for (kind, amount), i in zip(entries, ids, strict=True)]
    records = [_record(value, n) for n, value in enumerate(raw * (1 + repeats))]
    parsed = parse_ledger(records)
    assert list(parsed.rows.entry_id) == ids
    assert sum(
        a
        for a, kind in zip(parsed.rows.amount_minor, parsed.rows.kind, strict=True)
        if kind == "match"
    ) == sum(a for k, a in entries if k == "match")
    assert list(parsed.rows.kind) == [k for k, _ in entries]
    assert parsed.duplicates == len(entries) * repeats
    assert parsed.dead == []


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.uuids(),
)
def test_cursor_round_trips(created_at: datetime, key: uuid.UUID) -> None:
    cursor = encode_cursor(created_at, key)
    assert decode_cursor(cursor) == (created_at, key)
    assert "=" not in cursor


@pytest.mark.parametrize(
    "cursor",
    ["", "garbage", "W10", encode_cursor(datetime(2030, 1, 1, tzinfo=UTC), uuid.uuid4())[:-3]],
)
def test_bad_cursor_is_a_422(cursor: str) -> None:
    with pytest.raises(Problem) as problem:
        decode_cursor(cursor)
    assert problem.value.status == 422
    assert problem.value.errors == [
        {"field": "cursor", "message": "not a cursor returned by this list"}
    ]


def test_etags() -> None:
    tag = body_etag(b'{"a":1}')
    assert tag == body_etag(b'{"a":1}')
    assert tag != body_etag(b'{"a":2}')
    assert tag.startswith('"')
    assert etag_matches(tag, tag)
    assert etag_matches(f'"x", {tag}', tag)
    assert etag_matches(f"W/{tag}", tag)
    assert etag_matches("*", tag)
    assert not etag_matches(None, tag)
    assert not etag_matches('"other"', tag)


async def test_response_cache_loads_once_per_ttl() -> None:
    cache = ResponseCache(ttl=60)
    calls = 0

    async def load(previous: Cached | None) -> Cached:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return Cached(f'"{calls}"', b"body", calls, 0.0)

    results = await asyncio.gather(*(cache.get("k", load) for _ in range(20)))
    assert calls == 1
    assert {r.etag for r in results} == {'"1"'}
    assert (await cache.get("k", load)).etag == '"1"'
    assert (await cache.get("other", load)).etag == '"2"'


async def test_response_cache_expire_reloads_every_url_once_with_its_previous() -> None:
    cache = ResponseCache(ttl=60)
    seen: list[tuple[str, Cached | None]] = []

    def loader(key: str) -> Callable[[Cached | None], Awaitable[Cached]]:
        async def load(previous: Cached | None) -> Cached:
            seen.append((key, previous))
            return Cached(f'"{len(seen)}"', b"b", len(seen), 0.0)

        return load

    first = {key: await cache.get(key, loader(key)) for key in ("a", "b")}
    assert (await cache.get("a", loader("a"))).etag == first["a"].etag  # within the ttl
    cache.expire()  # the fold committed a batch
    assert (await cache.get("a", loader("a"))).etag == '"3"'
    assert (await cache.get("b", loader("b"))).etag == '"4"'
    assert seen[2:] == [("a", first["a"]), ("b", first["b"])]
    assert (await cache.get("a", loader("a"))).etag == '"3"'  # fresh again until the next
    assert len(seen) == 4


async def test_response_cache_without_ttl_reloads_and_passes_the_previous() -> None:
    cache = ResponseCache(ttl=0)
    seen: list[Cached | None] = []

    async def load(previous: Cached | None) -> Cached:
        seen.append(previous)
        return Cached('"t"', b"b", len(seen), 0.0)

    await cache.get("k", load)
    await cache.get("k", load)
    assert seen[0] is None
    assert seen[1] is not None
    assert seen[1].token == 1


async def test_response_cache_failure_reaches_every_waiter_and_is_not_cached() -> None:
    cache = ResponseCache(ttl=60)
    attempts = 0

    async def load(previous: Cached | None) -> Cached:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise ConnectionError("database down")
        return Cached('"ok"', b"b", None, 0.0)

    results = await asyncio.gather(
        *(cache.get("k", load) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert (await cache.get("k", load)).etag == '"ok"'
    assert attempts == 2


def test_recorded_at_offsets_are_kept_exactly() -> None:
    raw = _event()
    parsed = parse_ledger([_record(raw)])
    assert parsed.rows.recorded_at[0] == datetime(2031, 1, 1, tzinfo=UTC)
    assert parsed.rows.recorded_at[0].utcoffset() == timedelta(0)
