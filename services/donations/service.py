"""The donations service layer: the rule API's use cases (validation, the project check
with the charities service, versioning), the matching campaigns' use cases, and the
ledger reads. Owns the transactions and
raises domain errors; no SQL, no HTTP.

Donation arithmetic is in rules.py, the batch planning of the consumer in ledger.py, and
matching (with why a campaign's budget is never exceeded) in matching.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson

from services.donations import repository
from services.donations.charities import CharitiesClient, CharitiesUnavailable, ProjectInfo
from services.donations.matching import Campaign, campaign_status
from services.donations.rules import RuleVersion
from services.donations.schemas import (
    CampaignIn,
    CampaignOut,
    CampaignsOut,
    CurrencyTotalOut,
    PerItem,
    ReceiptEntryOut,
    ReceiptOut,
    RuleIn,
    RuleOut,
    RuleVersionsOut,
    StatementEntryOut,
    StatementOut,
)
from shared.auth import Principal, ensure_seller
from shared.db import Pool
from shared.observability import get_logger
from shared.pagination import (
    INT4_MAX,
    INT8_MAX,
    InvalidCursor,
    cursor_int,
    decode_cursor,
    encode_cursor,
    split_page,
)
from shared.problems import Conflict, Invalid, NotFound, Unavailable
from shared.tlog.api import LogReader, b64

log = get_logger(__name__)

_NEWEST = 2**31 - 1  # a rule version above every real one: the first page of versions


class RuleNotFound(NotFound):
    def __init__(self, seller_id: str) -> None:
        super().__init__("donation rule of seller", seller_id)


class DonationNotFound(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__("donation of order", order_id)


class CampaignNotFound(NotFound):
    def __init__(self, campaign_id: str) -> None:
        super().__init__("campaign", campaign_id)


class CampaignConflict(Conflict):
    title = "Campaign exists with other terms"


class ProofNotReady(Unavailable):
    """The order has entries the served checkpoint does not cover yet (503, retry in 1 s:
    the sequencer signs a checkpoint within a second of new entries)."""

    title = "Donation not in the log yet"

    def __init__(self, order_id: str) -> None:
        super().__init__(
            f"the donation of order {order_id!r} is not in the log's checkpoint yet",
            retry_after=1,
        )


class ProjectCheckUnavailable(Unavailable):
    """The charities service could not say whether a rule's project exists (503)."""

    title = "Charities service unavailable"


def _position(cursor: str | None, maximum: int) -> int | None:
    """The list position a cursor of this service holds (a ledger seq, a bigint, or a rule
    version, an integer: ``maximum`` is its column type's largest value)."""
    if cursor is None:
        return None
    return cursor_int(decode_cursor(cursor), maximum)


def rule_errors(body: RuleIn) -> list[tuple[str, str]]:
    """What a mode requires and forbids, as (field, message) pairs (empty when valid)."""
    errors: list[tuple[str, str]] = []

    def error(field: str, message: str) -> None:
        errors.append((field, message))

    seen: set[str] = set()
    for n, item in enumerate(body.per_item):
        if item.item_id in seen:
            error(f"per_item.{n}.item_id", f"item {item.item_id!r} is listed twice")
        seen.add(item.item_id)
    if body.mode == "fixed":
        if body.amount_minor is None:
            error("amount_minor", "required when mode is 'fixed' (0 for an item-only rule)")
        elif body.amount_minor < 0:  # 0: an item-only rule, no order amount
            error("amount_minor", "must not be negative")
        for name in ("basis_points", "min_minor", "max_minor"):
            if getattr(body, name) is not None:
                error(name, "not allowed when mode is 'fixed'")
    else:
        if body.basis_points is None:
            error("basis_points", "required when mode is 'percent'")
        if body.amount_minor is not None:
            error("amount_minor", "not allowed when mode is 'percent' (use basis_points)")
        if (
            body.min_minor is not None
            and body.max_minor is not None
            and body.min_minor > body.max_minor
        ):
            error("min_minor", "must not exceed max_minor")
    return errors


def _same_terms(a: RuleVersion, b: RuleVersion) -> bool:
    return (
        a.project_id,
        a.mode,
        a.amount_minor,
        a.basis_points,
        a.min_minor,
        a.max_minor,
        a.currency,
        a.active,
        dict(a.per_item),
    ) == (
        b.project_id,
        b.mode,
        b.amount_minor,
        b.basis_points,
        b.min_minor,
        b.max_minor,
        b.currency,
        b.active,
        dict(b.per_item),
    )


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
        per_item=[
            PerItem(item_id=item_id, amount_minor=amount)
            for item_id, amount in sorted(rule.per_item.items())
        ],
    )


def campaign_errors(body: CampaignIn) -> list[tuple[str, str]]:
    """What a campaign body must satisfy beyond its fields' own types (empty when valid);
    ``ends_at`` after now is checked separately (a repeated create stays a repeat)."""
    errors: list[tuple[str, str]] = []
    if body.ratio_bp <= 0 and body.per_item_minor <= 0:
        errors.append(("ratio_bp", "ratio_bp or per_item_minor must be positive"))
    if body.ends_at <= body.starts_at:
        errors.append(("ends_at", "must be after starts_at"))
    if body.sellers is not None and len(set(body.sellers)) != len(body.sellers):
        errors.append(("sellers", "a seller is listed twice"))
    return errors


def _same_campaign(stored: Campaign, body: CampaignIn) -> bool:
    return (
        stored.sponsor,
        stored.project_id,
        stored.ratio_bp,
        stored.per_item_minor,
        stored.per_order_cap_minor,
        stored.budget_minor,
        stored.starts_at,
        stored.ends_at,
        stored.sellers,
    ) == (
        body.sponsor,
        body.project_id,
        body.ratio_bp,
        body.per_item_minor,
        body.per_order_cap_minor,
        body.budget_minor,
        body.starts_at,
        body.ends_at,
        tuple(body.sellers) if body.sellers is not None else None,
    )


def _campaign_out(c: Campaign, now: datetime) -> CampaignOut:
    return CampaignOut(
        campaign_id=c.campaign_id,
        sponsor=c.sponsor,
        project_id=c.project_id,
        ratio_bp=c.ratio_bp,
        per_item_minor=c.per_item_minor,
        per_order_cap_minor=c.per_order_cap_minor,
        budget_minor=c.budget_minor,
        starts_at=c.starts_at,
        ends_at=c.ends_at,
        sellers=list(c.sellers) if c.sellers is not None else None,
        currency=c.currency,
        matched_minor=c.matched_minor,
        remaining_minor=c.remaining_minor,
        status=campaign_status(c, now),
        closed_at=c.closed_at,
    )


class DonationService:
    """Seller rules and ledger reads, over this service's pool; rule changes check their
    project with the charities service first."""

    def __init__(self, pool: Pool, charities: CharitiesClient, log: LogReader) -> None:
        self._pool = pool
        self._charities = charities
        self._log = log

    async def set_rule(self, principal: Principal, seller_id: str, body: RuleIn) -> RuleOut:
        """Records ``body`` as the seller's next rule version, effective from now (database
        time), or returns the current one if it already says exactly this (a repeated PUT
        is not a change)."""
        ensure_seller(principal, seller_id)
        errors = rule_errors(body)
        if errors:
            raise Invalid(errors)
        project = await self._active_project(body.project_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await repository.lock_seller_rule(conn, seller_id)
            current = await repository.current_rule(conn, seller_id)
            candidate = RuleVersion(
                seller_id=seller_id,
                version=current.version + 1 if current is not None else 1,
                project_id=body.project_id,
                mode=body.mode,
                amount_minor=body.amount_minor,
                basis_points=body.basis_points,
                min_minor=body.min_minor,
                max_minor=body.max_minor,
                currency=project.currency,
                active=body.active,
                effective_from=datetime.now(UTC),  # replaced by the database clock
                per_item={item.item_id: item.amount_minor for item in body.per_item},
            )
            if current is not None and _same_terms(current, candidate):
                return _rule_out(current)
            stored = await repository.insert_rule(
                conn, candidate, current.effective_from if current is not None else None
            )
        return _rule_out(stored)

    async def _active_project(self, project_id: uuid.UUID) -> ProjectInfo:
        """The project, if the charities service says it exists and is active (else 422;
        503 if it cannot say)."""
        try:
            project = await self._charities.project(project_id)
        except CharitiesUnavailable as exc:
            # The reason (hosts, ports, exception text) goes to the log, not to the client.
            log.warning("project check failed", project_id=str(project_id), error=str(exc))
            raise ProjectCheckUnavailable(
                "the charities service could not be asked whether the project exists; "
                "nothing was recorded, try again later"
            ) from exc
        if project is None:
            raise Invalid([("project_id", f"project {project_id} does not exist")])
        if not project.active:
            raise Invalid([("project_id", f"project {project_id} is {project.status}")])
        return project

    async def rule(self, principal: Principal, seller_id: str) -> RuleOut:
        ensure_seller(principal, seller_id)
        async with self._pool.acquire() as conn:
            rule = await repository.current_rule(conn, seller_id)
        if rule is None:
            raise RuleNotFound(seller_id)
        return _rule_out(rule)

    async def rule_versions(
        self, principal: Principal, seller_id: str, limit: int, cursor: str | None
    ) -> RuleVersionsOut:
        """All versions of the seller's rule, newest first (empty if never set)."""
        ensure_seller(principal, seller_id)
        before = _position(cursor, INT4_MAX)
        async with self._pool.acquire() as conn:
            rules = await repository.rule_versions(
                conn, seller_id, before if before is not None else _NEWEST, limit + 1
            )
        page, more = split_page(rules, limit)
        return RuleVersionsOut(
            items=[_rule_out(r) for r in page],
            next_cursor=encode_cursor(page[-1].version) if more else None,
        )

    async def statement(
        self, principal: Principal, seller_id: str, limit: int, cursor: str | None
    ) -> StatementOut:
        """The seller's ledger entries, oldest first, and its net donation per currency
        (one snapshot: the page and the totals agree)."""
        ensure_seller(principal, seller_id)
        after = _position(cursor, INT8_MAX) or 0
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            rows = await repository.seller_entries(conn, seller_id, after, limit + 1)
            totals = await repository.seller_totals(conn, seller_id)
        page, more = split_page(rows, limit)
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
            next_cursor=encode_cursor(page[-1]["seq"]) if more else None,
            totals=[
                CurrencyTotalOut(currency=t["currency"], net_minor=int(t["net_minor"]))
                for t in totals
            ],
        )

    async def receipt(self, order_id: str) -> ReceiptOut:
        """The public receipt of the donation an order made."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            rows = await repository.order_entries(conn, order_id)
            posting = await repository.order_posting(conn, order_id) if rows else None
        if not rows:
            raise DonationNotFound(order_id)
        first = rows[0]
        sign = {"accrual": 1, "reversal": -1}
        net = sum(sign.get(r["kind"], 0) * r["amount_minor"] for r in rows)
        match_sign = {"match": 1, "match_reversal": -1}
        matched = sum(match_sign.get(r["kind"], 0) * r["amount_minor"] for r in rows)
        available_on = max(
            (r["available_on"] for r in rows if r["available_on"] is not None), default=None
        )
        return ReceiptOut(
            order_id=order_id,
            seller_id=first["seller_id"],
            project_id=first["project_id"],
            currency=first["currency"],
            net_minor=net,
            matched_minor=matched,
            status="posted" if posting is not None else "pending",
            available_on=available_on,
            final=posting is not None
            or (available_on is not None and available_on <= datetime.now(UTC)),
            entries=[
                ReceiptEntryOut(
                    entry_id=r["entry_id"],
                    kind=r["kind"],
                    amount_minor=r["amount_minor"],
                    rule_version=r["rule_version"],
                    campaign_id=r["campaign_id"],
                    recorded_at=r["recorded_at"],
                    available_on=r["available_on"],
                )
                for r in rows
            ],
        )

    # --- matching campaigns --------------------------------------------------------------

    async def create_campaign(self, body: CampaignIn) -> tuple[CampaignOut, bool]:
        """Creates the campaign (True) or returns the one with its id if the body is the
        same (False); another body under that id is a conflict."""
        errors = campaign_errors(body)
        if errors:
            raise Invalid(errors)
        async with self._pool.acquire() as conn:
            existing = await repository.campaign(conn, body.campaign_id)
        if existing is not None:
            return self._repeat(existing, body), False
        now = datetime.now(UTC)
        if body.ends_at <= now:
            raise Invalid([("ends_at", "must be in the future")])
        project = await self._active_project(body.project_id)
        candidate = Campaign(
            campaign_id=body.campaign_id,
            sponsor=body.sponsor,
            project_id=body.project_id,
            ratio_bp=body.ratio_bp,
            per_item_minor=body.per_item_minor,
            per_order_cap_minor=body.per_order_cap_minor,
            budget_minor=body.budget_minor,
            currency=project.currency,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            sellers=tuple(body.sellers) if body.sellers is not None else None,
            closed_at=None,
            matched_minor=0,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await repository.insert_campaign(conn, candidate)
            if stored is None:  # created concurrently under the same id
                existing = await repository.campaign(conn, body.campaign_id)
        if stored is None:
            assert existing is not None
            return self._repeat(existing, body), False
        return _campaign_out(stored, datetime.now(UTC)), True

    @staticmethod
    def _repeat(existing: Campaign, body: CampaignIn) -> CampaignOut:
        if not _same_campaign(existing, body):
            raise CampaignConflict(
                f"campaign {body.campaign_id!r} exists with other terms",
            )
        return _campaign_out(existing, datetime.now(UTC))

    async def campaign(self, campaign_id: str) -> CampaignOut:
        async with self._pool.acquire() as conn:
            found = await repository.campaign(conn, campaign_id)
        if found is None:
            raise CampaignNotFound(campaign_id)
        return _campaign_out(found, datetime.now(UTC))

    async def campaigns(
        self, project_id: uuid.UUID | None, limit: int, cursor: str | None
    ) -> CampaignsOut:
        """Campaigns in campaign_id order (optionally of one project)."""
        after = ""
        if cursor is not None:
            position = decode_cursor(cursor)
            if not isinstance(position, str) or "\x00" in position:
                raise InvalidCursor()
            after = position
        async with self._pool.acquire() as conn:
            rows = await repository.campaigns(conn, after, project_id, limit + 1)
        page, more = split_page(rows, limit)
        now = datetime.now(UTC)
        return CampaignsOut(
            items=[_campaign_out(c, now) for c in page],
            next_cursor=encode_cursor(page[-1].campaign_id) if more else None,
        )

    async def close_campaign(self, campaign_id: str) -> CampaignOut:
        """Ends the campaign now: every batch the consumer commits after this matches
        nothing more for it (the update waits for a batch holding the campaign's lock)."""
        async with self._pool.acquire() as conn, conn.transaction():
            closed = await repository.close_campaign(conn, campaign_id, datetime.now(UTC))
        if closed is None:
            raise CampaignNotFound(campaign_id)
        return _campaign_out(closed, datetime.now(UTC))

    async def order_proof(self, order_id: str) -> bytes:
        """Every log record of the order (its entries, then its posting once posted), each
        with its inclusion proof against one signed checkpoint, as the JSON of
        ``OrderProofOut`` (built with orjson: the proof endpoints are the hot read): 404
        if the order has no entry, 503 (Retry-After) while any of them is not covered by
        the served checkpoint yet."""
        checkpoint = await self._log.checkpoint()
        async with self._pool.acquire() as conn:
            records = await repository.order_log_records(conn, order_id)
            if not records:
                raise DonationNotFound(order_id)
            if records[0]["salt"] is None or any(
                r["leaf_index"] is None or r["leaf_index"] >= checkpoint.size for r in records
            ):
                raise ProofNotReady(order_id)
            indexes = [r["leaf_index"] for r in records]
            proofs = await self._log.inclusion_proofs(conn, checkpoint.size, indexes)
        return orjson.dumps(
            {
                "order_id": order_id,
                "order_salt": bytes(records[0]["salt"]).hex(),
                "checkpoint": checkpoint.text,
                "entries": [
                    {
                        "entry_id": None if r["entry_id"] is None else str(r["entry_id"]),
                        "leaf_index": r["leaf_index"],
                        "leaf_b64": b64(r["leaf"]),
                        "inclusion_proof": [b64(h) for h in proof],
                    }
                    for r, proof in zip(records, proofs, strict=True)
                ],
            }
        )
