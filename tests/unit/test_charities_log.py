"""The charities log's leaf formats (pure, no servers), and ``tools.audit``'s independent
rebuild of them agreeing with the service's on any row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.charities.log import allocation_leaf, disbursement_leaf
from tools import audit

D_ID = "4f0c1f7e-5c1e-4d55-9d0e-0c6b2d1f4a11"
E_ID = "e0d6f384-3cc6-fa73-9620-64b959979de8"
P_ID = "225994bc-dcdf-4eb5-8db5-3b557977763d"


def _disbursement(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "disbursement_id": D_ID,
        "project_id": P_ID,
        "currency": "CNY",
        "amount_minor": 150,
        "recipient": "École du village",
        "purpose": 'books "A" & pens',
        "evidence_sha256": "ab" * 32,
        "recorded_at": datetime(2026, 11, 28, 20, 0, 0, 5, tzinfo=timezone(timedelta(hours=8))),
    }
    row.update(over)
    return row


def test_a_disbursement_leaf_is_canonical_json() -> None:
    assert (
        disbursement_leaf(_disbursement())
        == (
            '{"amount_minor":150,"currency":"CNY",'
            f'"disbursement_id":"{D_ID}","evidence_sha256":"{"ab" * 32}",'
            f'"project_id":"{P_ID}","purpose":"books \\"A\\" & pens",'
            '"recipient":"École du village","recorded_at":"2026-11-28T12:00:00.000005Z",'
            '"type":"disbursement"}'
        ).encode()
    )
    no_evidence = orjson.loads(disbursement_leaf(_disbursement(evidence_sha256=None)))
    assert no_evidence["evidence_sha256"] is None


def test_an_allocation_leaf_names_the_donations_ledger_entry() -> None:
    row = {"disbursement_id": uuid.UUID(D_ID), "entry_id": uuid.UUID(E_ID), "amount_minor": 100}
    assert (
        allocation_leaf(row)
        == (
            f'{{"amount_minor":100,"disbursement_id":"{D_ID}","entry_id":"{E_ID}",'
            '"type":"allocation"}'
        ).encode()
    )


_TEXT = st.text(min_size=1, max_size=40)


@given(
    disbursement_id=st.uuids(),
    entry_id=st.uuids(),
    amount=st.integers(min_value=1, max_value=2**63 - 1),
    recipient=_TEXT,
    purpose=_TEXT,
    evidence=st.none() | st.binary(min_size=32, max_size=32).map(bytes.hex),
    at=st.datetimes(timezones=st.just(UTC)),
)
def test_the_audit_rebuilds_the_same_leaves_as_the_service(
    disbursement_id: uuid.UUID,
    entry_id: uuid.UUID,
    amount: int,
    recipient: str,
    purpose: str,
    evidence: str | None,
    at: datetime,
) -> None:
    # The audit reads UUIDs as text (its query casts them), the service as text too.
    row = _disbursement(
        disbursement_id=str(disbursement_id),
        amount_minor=amount,
        recipient=recipient,
        purpose=purpose,
        evidence_sha256=evidence,
        recorded_at=at,
    )
    assert audit.disbursement_leaf(row) == disbursement_leaf(row)
    allocation = {
        "disbursement_id": str(disbursement_id),
        "entry_id": str(entry_id),
        "amount_minor": amount,
    }
    audit_row = {f"a_{k}": v for k, v in allocation.items()}
    assert audit.allocation_leaf(audit_row) == allocation_leaf(allocation)
