"""The donations service layer: the rule API's use cases (validation, the project check
with the charities service, versioning) and the ledger reads. Owns the transactions and
raises domain errors; no SQL, no HTTP.

Donation arithmetic is in rules.py and the batch planning of the consumer in ledger.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.donations import repository
from services.donations.charities import CharitiesClient, CharitiesUnavailable
from services.donations.log import LEDGER_TABLE
from services.donations.rules import RuleVersion
from services.donations.schemas import (
    CurrencyTotalOut,
    OrderProofEntryOut,
    OrderProofOut,
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
    cursor_int,
    decode_cursor,
    encode_cursor,
    split_page,
)
from shared.problems import Invalid, NotFound, Unavailable
from shared.tlog import store
from shared.tlog.api import LogReader, b64

log = get_logger(__name__)

_NEWEST = 2**31 - 1  # a rule version above every real one: the first page of versions


class RuleNotFound(NotFound):
    def __init__(self, seller_id: str) -> None:
        super().__init__("donation rule of seller", seller_id)


class DonationNotFound(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__("donation of order", order_id)


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

    if body.mode == "fixed":
        if body.amount_minor is None:
            error("amount_minor", "required when mode is 'fixed'")
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
    ) == (
        b.project_id,
        b.mode,
        b.amount_minor,
        b.basis_points,
        b.min_minor,
        b.max_minor,
        b.currency,
        b.active,
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
        try:
            project = await self._charities.project(body.project_id)
        except CharitiesUnavailable as exc:
            # The reason (hosts, ports, exception text) goes to the log, not to the client.
            log.warning("project check failed", project_id=str(body.project_id), error=str(exc))
            raise ProjectCheckUnavailable(
                "the charities service could not be asked whether the project exists; "
                "no rule was recorded, try again later"
            ) from exc
        if project is None:
            raise Invalid([("project_id", f"project {body.project_id} does not exist")])
        if not project.active:
            raise Invalid([("project_id", f"project {body.project_id} is {project.status}")])
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
            )
            if current is not None and _same_terms(current, candidate):
                return _rule_out(current)
            stored = await repository.insert_rule(
                conn, candidate, current.effective_from if current is not None else None
            )
        return _rule_out(stored)

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
        net = sum(r["amount_minor"] if r["kind"] == "accrual" else -r["amount_minor"] for r in rows)
        available_on = max(
            (r["available_on"] for r in rows if r["available_on"] is not None), default=None
        )
        return ReceiptOut(
            order_id=order_id,
            seller_id=first["seller_id"],
            project_id=first["project_id"],
            currency=first["currency"],
            net_minor=net,
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
                    recorded_at=r["recorded_at"],
                    available_on=r["available_on"],
                )
                for r in rows
            ],
        )

    async def order_proof(self, order_id: str) -> OrderProofOut:
        """Every log entry of the order, each with its inclusion proof against one signed
        checkpoint: 404 if the order has no entry, 503 (Retry-After) while any of its
        entries is not covered by the served checkpoint yet."""
        checkpoint = await self._log.checkpoint()
        async with self._pool.acquire() as conn:
            records = await repository.order_log_records(conn, order_id)
            if not records:
                raise DonationNotFound(order_id)
            keys = [str(r["seq"]) for r in records]
            leaves = await store.record_leaves(conn, LEDGER_TABLE, keys)
            if records[0]["salt"] is None or any(
                k not in leaves or leaves[k][0] >= checkpoint.size for k in keys
            ):
                raise ProofNotReady(order_id)
            indexes = [leaves[k][0] for k in keys]
            proofs = await self._log.inclusion_proofs(conn, checkpoint.size, indexes)
        return OrderProofOut(
            order_id=order_id,
            order_salt=bytes(records[0]["salt"]).hex(),
            checkpoint=checkpoint.note.decode("utf-8"),
            entries=[
                OrderProofEntryOut(
                    entry_id=r["entry_id"],
                    leaf_index=leaves[k][0],
                    leaf_b64=b64(leaves[k][1]),
                    inclusion_proof=[b64(h) for h in proof],
                )
                for r, k, proof in zip(records, keys, proofs, strict=True)
            ],
        )
