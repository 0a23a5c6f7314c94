"""The donations log's leaf formats and the log key's loading (pure, no servers)."""

from __future__ import annotations

import hashlib
import stat
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.donations.log import (
    entry_leaf,
    entry_leaves,
    order_commitment,
    posting_leaf,
)
from shared.tlog.leaf import format_time
from shared.tlog.note import InvalidKeyError, generate_key
from shared.tlog.signing import load_or_create_signer

ORIGIN = "goods-for-good/donations"


def _row(kind: str = "accrual", **over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "seq": 7,
        "entry_id": uuid.UUID("e0d6f384-3cc6-fa73-9620-64b959979de8"),
        "order_id": "o-1",
        "kind": kind,
        "amount_minor": 39,
        "currency": "CNY",
        "project_id": uuid.UUID("225994bc-dcdf-4eb5-8db5-3b557977763d"),
        "seller_id": "s-ü",
        "rule_version": 3,
        "campaign_id": uuid.UUID("0000000a-0000-0000-0000-00000000000b"),
        "recorded_at": datetime(2026, 11, 28, 11, 52, 13, 640143, tzinfo=UTC),
        "salt": bytes(range(16)),
    }
    row.update(over)
    return row


def test_an_entry_leaf_is_canonical_json_with_the_commitment() -> None:
    leaf = entry_leaf(_row())
    commitment = hashlib.sha256(b"o-1\x00" + bytes(range(16))).hexdigest()
    assert (
        leaf
        == (
            '{"amount_minor":39,"campaign_id":null,"currency":"CNY",'
            '"entry_id":"e0d6f384-3cc6-fa73-9620-64b959979de8","kind":"accrual",'
            f'"order_commitment":"{commitment}",'
            '"project_id":"225994bc-dcdf-4eb5-8db5-3b557977763d",'
            '"recorded_at":"2026-11-28T11:52:13.640143Z","rule_version":3,"seller_id":"s-ü",'
            '"type":"entry"}'
        ).encode()
    )
    assert b"o-1" not in leaf


def test_match_leaves_carry_the_campaign_and_no_rule_version() -> None:
    fields = orjson.loads(entry_leaf(_row("match")))
    assert fields["rule_version"] is None
    assert fields["campaign_id"] == "0000000a-0000-0000-0000-00000000000b"
    assert orjson.loads(entry_leaf(_row("match_reversal", rule_version=None)))["kind"] == (
        "match_reversal"
    )


def test_a_posting_leaf() -> None:
    leaf = posting_leaf(
        {
            "order_id": "o-1",
            "salt": b"\x00" * 16,
            "project_id": uuid.UUID(int=1),
            "seller_id": "s",
            "currency": "EUR",
            "posted_minor": 120,
            "posted_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        }
    )
    fields = orjson.loads(leaf)
    assert fields["type"] == "posting"
    assert fields["posted_at"] == "2026-01-02T03:04:05.000000Z"
    assert list(fields) == sorted(fields)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.just(timezone(timedelta(hours=-7))),
    )
)
def test_times_are_utc_with_microseconds_and_z(at: datetime) -> None:
    text = format_time(at)
    assert len(text) == 27
    assert text.endswith("Z")
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == at


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 1, 1))  # noqa: DTZ001


@given(st.text(min_size=1, max_size=64), st.binary(min_size=16, max_size=16))
def test_the_commitment_is_sha256_of_id_zero_salt(order_id: str, salt: bytes) -> None:
    expected = hashlib.sha256(order_id.encode() + b"\x00" + salt).hexdigest()
    assert order_commitment(order_id, salt) == expected


def test_batch_leaves_equal_single_leaves() -> None:
    rows = [_row(seq=n, order_id=f"o-{n}") for n in range(5)]
    assert entry_leaves(rows) == {str(n): entry_leaf(r) for n, r in enumerate(rows)}


def test_the_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "log-key"
    first = load_or_create_signer(ORIGIN, None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_signer(ORIGIN, None, path)
    assert again.verifier() == first.verifier()
    with pytest.raises(InvalidKeyError):
        load_or_create_signer("another/origin", None, path)


def test_a_key_string_wins_over_the_file(tmp_path: Path) -> None:
    skey, vkey = generate_key(ORIGIN)
    signer = load_or_create_signer(ORIGIN, skey, tmp_path / "absent")
    assert signer.verifier().key == vkey
    assert not (tmp_path / "absent").exists()
