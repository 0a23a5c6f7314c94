"""HTTP endpoints of the donations service (API.md, "donations service")."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from services.donations import repository, service
from services.donations.charities import CharitiesClient
from services.donations.rules import RuleVersion
from services.donations.schemas import (
    CurrencyTotalOut,
    ReceiptEntryOut,
    ReceiptOut,
    RuleIn,
    RuleOut,
    RuleVersionsOut,
    StatementEntryOut,
    StatementOut,
)
from shared.auth import Principal, Role, SellerDep, ensure_seller, require
from shared.problems import not_found, unprocessable
from shared.web import PoolDep

router = APIRouter(prefix="/v1", tags=["donations"])

SellerId = Annotated[str, Path(min_length=1, max_length=64)]
OrderId = Annotated[str, Path(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]
OwnSellerDep = Annotated[Principal, Depends(require(Role.SELLER))]


def _charities(request: Request) -> CharitiesClient:
    client: CharitiesClient = request.app.state.charities
    return client


CharitiesDep = Annotated[CharitiesClient, Depends(_charities)]


def _rule_out(rule: RuleVersion) -> RuleOut:
    return RuleOut(
        seller_id=rule.seller_id,
        version=rule.version,
        project_id=rule.project_id,
        mode=rule.mode,
        amount_minor=rule.amount_minor,
        basis_points=rule.basis_points,
        min_minor=rule.min_minor,
        max_minor=rule.max_minor,
        currency=rule.currency,
        active=rule.active,
        effective_from=rule.effective_from,
    )


def _encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{position}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, position = text.partition(":")
        if prefix != "v1" or not position.isdigit():
            raise ValueError(text)
        return int(position)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise unprocessable("cursor", "not a cursor returned by this endpoint") from exc


@router.put("/sellers/{seller_id}/donation-rule", response_model=RuleOut)
async def put_rule(
    seller_id: SellerId,
    body: RuleIn,
    principal: OwnSellerDep,
    pool: PoolDep,
    charities: CharitiesDep,
) -> RuleOut:
    """Sets the seller's rule: a new version, effective from now (server time, UTC)."""
    ensure_seller(principal, seller_id)
    return _rule_out(await service.set_rule(pool, charities, seller_id, body))


@router.get("/sellers/{seller_id}/donation-rule", response_model=RuleOut)
async def get_rule(seller_id: SellerId, principal: SellerDep, pool: PoolDep) -> RuleOut:
    ensure_seller(principal, seller_id)
    async with pool.acquire() as conn:
        rule = await repository.current_rule(conn, seller_id)
    if rule is None:
        raise not_found("donation rule of seller", seller_id)
    return _rule_out(rule)


@router.get("/sellers/{seller_id}/donation-rule/versions", response_model=RuleVersionsOut)
async def get_rule_versions(
    seller_id: SellerId,
    principal: SellerDep,
    pool: PoolDep,
    limit: Limit = 50,
    cursor: str | None = None,
) -> RuleVersionsOut:
    """All versions of the seller's rule, newest first (empty if never set)."""
    ensure_seller(principal, seller_id)
    before = _decode_cursor(cursor)
    async with pool.acquire() as conn:
        rules = await repository.rule_versions(
            conn, seller_id, before if before is not None else 2**31 - 1, limit + 1
        )
    page = rules[:limit]
    more = len(rules) > limit
    return RuleVersionsOut(
        items=[_rule_out(r) for r in page],
        next_cursor=_encode_cursor(page[-1].version) if more else None,
    )


@router.get("/sellers/{seller_id}/donations", response_model=StatementOut)
async def get_statement(
    seller_id: SellerId,
    principal: SellerDep,
    pool: PoolDep,
    limit: Limit = 50,
    cursor: str | None = None,
) -> StatementOut:
    """The seller's ledger entries, oldest first, and its net donation per currency."""
    ensure_seller(principal, seller_id)
    after = _decode_cursor(cursor) or 0
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        rows = await repository.seller_entries(conn, seller_id, after, limit + 1)
        totals = await repository.seller_totals(conn, seller_id)
    page = rows[:limit]
    more = len(rows) > limit
    return StatementOut(
        items=[
            StatementEntryOut(
                entry_id=r["entry_id"],
                order_id=r["order_id"],
                seller_id=r["seller_id"],
                project_id=r["project_id"],
                kind=r["kind"],
                amount_minor=r["amount_minor"],
                currency=r["currency"],
                rule_version=r["rule_version"],
                recorded_at=r["recorded_at"],
            )
            for r in page
        ],
        next_cursor=_encode_cursor(page[-1]["seq"]) if more else None,
        totals=[CurrencyTotalOut(currency=t["currency"], net_minor=t["net_minor"]) for t in totals],
    )


@router.get("/orders/{order_id}/donation", response_model=ReceiptOut)
async def get_receipt(order_id: OrderId, pool: PoolDep) -> ReceiptOut:
    """Public receipt of the donation an order made (404 if it made none)."""
    async with pool.acquire() as conn:
        rows = await repository.order_entries(conn, order_id)
    if not rows:
        raise not_found("donation of order", order_id)
    first = rows[0]
    net = sum(r["amount_minor"] if r["kind"] == "accrual" else -r["amount_minor"] for r in rows)
    return ReceiptOut(
        order_id=order_id,
        seller_id=first["seller_id"],
        project_id=first["project_id"],
        currency=first["currency"],
        net_minor=net,
        entries=[
            ReceiptEntryOut(
                entry_id=r["entry_id"],
                kind=r["kind"],
                amount_minor=r["amount_minor"],
                rule_version=r["rule_version"],
                recorded_at=r["recorded_at"],
            )
            for r in rows
        ],
    )
