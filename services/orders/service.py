"""Order logic: idempotent ingest, the state machine's moves, events into the outbox.

Each operation runs in one transaction that writes the order change and its event row
together (transactional outbox). Moves on an existing order lock its row first
(``SELECT ... FOR UPDATE``), so racing requests on one order serialize and their events
get outbox ids in commit order, which is the order the relay publishes them in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import asyncpg
import msgspec
import orjson
from prometheus_client import Counter

from services.orders import domain
from services.orders import repository as repo
from services.orders.domain import FieldError, OrderStatus
from services.orders.schemas import FastOrder, OrderIn, OrderOut, RefundIn, RefundOut
from shared.auth import Principal, ensure_seller
from shared.db import Conn, Pool
from shared.events import (
    OrderCancelled,
    OrderCompleted,
    OrderRefunded,
    OrderSnapshot,
    encode,
    new_event_ids,
)
from shared.events import OrderItem as EventItem
from shared.outbox import OutboxMessage, enqueue
from shared.problems import Conflict, Forbidden, Invalid, NotFound
from shared.tracing import current_traceparent

OUTCOMES = Counter(
    "gfg_orders_requests_total",
    "Orders API outcomes (per order for batches)",
    ["operation", "outcome"],
)
AGGREGATE_TYPE = "order"


class OrderNotFound(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__("order", order_id)
        self.order_id = order_id


class IdempotencyConflict(Conflict):
    """The same order_id / refund_id was used before with a different request.

    The detail names only what the client sent: never another tenant's order, seller or
    amount (an order_id is platform-wide, so a storefront can learn that an id is taken,
    and nothing else about it).
    """


class InvalidOrder(Invalid):
    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__([(e.field, e.message) for e in errors])
        self.field_errors = list(errors)


def count_invalid_request(route_name: str) -> None:
    """Counts a request refused by validation before it reached the service."""
    OUTCOMES.labels(route_name, "invalid").inc()


Item = TypeVar("Item")


@dataclass(frozen=True)
class Stored(Generic[Item]):
    """What a create returns: the stored item, and whether this request created it
    (False: a retry of an earlier request, answered with what that one stored)."""

    item: Item
    created: bool


def _utcnow() -> datetime:
    return datetime.now(UTC)


_UUIDS = msgspec.json.Decoder(list[uuid.UUID])


def _event_ids(count: int) -> list[uuid.UUID]:
    """``count`` random event ids: ``new_event_ids``' one ``os.urandom`` call, made UUIDs
    by msgspec in one pass (a third of ``uuid4``'s cost each, for a batch's events)."""
    if not count:
        return []
    return _UUIDS.decode('["' + '","'.join(new_event_ids(count)) + '"]')


def order_out(row: asyncpg.Record) -> OrderOut:
    return OrderOut.model_validate(
        {
            "order_id": row["order_id"],
            "seller_id": row["seller_id"],
            "buyer_ref": row["buyer_ref"],
            "currency": row["currency"],
            "total_minor": row["total_minor"],
            "items": row["items"],
            "placed_at": row["placed_at"],
            "status": row["status"],
            "completed_at": row["completed_at"],
            "cancelled_at": row["cancelled_at"],
            "refunded_minor": row["refunded_minor"],
        }
    )


def _new_order_out(new: repo.NewOrder, order: OrderIn) -> OrderOut:
    # Built from checked values without validating them again (the single-ingest hot path).
    return OrderOut.model_construct(
        order_id=new.order_id,
        seller_id=new.seller_id,
        buyer_ref=new.buyer_ref,
        currency=new.currency,
        total_minor=new.total_minor,
        items=order.items,
        placed_at=new.placed_at,
        status=order.status,
        completed_at=new.completed_at,
        cancelled_at=None,
        refunded_minor=0,
    )


class OrderService:
    def __init__(self, pool: Pool, *, topic: str, clock_skew: timedelta) -> None:
        self._pool = pool
        self._topic = topic
        self._skew = clock_skew

    # -- ingest -----------------------------------------------------------------------

    def _prepare(
        self, order: OrderIn | FastOrder, now: datetime, field_prefix: str = ""
    ) -> repo.NewOrder:
        errors = domain.check_order(
            total_minor=order.total_minor,
            items=order.items,
            placed_at=order.placed_at,
            status=order.status,
            completed_at=order.completed_at,
            now=now,
            clock_skew=self._skew,
        )
        if errors:
            raise InvalidOrder([FieldError(field_prefix + e.field, e.message) for e in errors])
        canonical = order.canonical()  # dumped once: the items column and the hash
        completed_at = None
        placed_at = order.placed_at or now
        if order.status == "completed":
            completed_at = order.completed_at or now
            # An order reported complete without placed_at was placed by then at the latest.
            placed_at = order.placed_at or min(now, completed_at)
        return repo.NewOrder(
            order_id=order.order_id,
            seller_id=order.seller_id,
            buyer_ref=order.buyer_ref,
            currency=order.currency,
            total_minor=order.total_minor,
            items_json=orjson.dumps(canonical["items"]).decode(),
            placed_at=placed_at,
            status=order.status,
            completed_at=completed_at,
            request_hash=domain.request_hash(canonical),
        )

    def _completed_message(
        self,
        order: repo.NewOrder,
        items: Sequence[Any],
        traceparent: str | None = None,
        event_id: uuid.UUID | None = None,
    ) -> OutboxMessage:
        """The ``order.completed`` row of ``order``. A batch passes ``traceparent`` (the
        request's, read once) and ``event_id`` (from ``_event_ids``); by default they are
        the current span's and a fresh ``uuid4``."""
        assert order.completed_at is not None
        event = OrderCompleted(
            event_id=uuid.uuid4() if event_id is None else event_id,
            occurred_at=order.completed_at,
            order=OrderSnapshot(
                order_id=order.order_id,
                seller_id=order.seller_id,
                currency=order.currency,
                total_minor=order.total_minor,
                items=[
                    EventItem(
                        item_id=i["item_id"] if isinstance(i, dict) else i.item_id,
                        quantity=i["quantity"] if isinstance(i, dict) else i.quantity,
                        unit_price_minor=(
                            i["unit_price_minor"] if isinstance(i, dict) else i.unit_price_minor
                        ),
                    )
                    for i in items
                ],
                placed_at=order.placed_at,
                completed_at=order.completed_at,
            ),
        )
        if traceparent is None:
            traceparent = current_traceparent()
        return self._message(order.order_id, event.type, encode(event), traceparent)

    def _message(
        self, order_id: str, event_type: str, payload: bytes, traceparent: str | None = None
    ) -> OutboxMessage:
        return OutboxMessage(
            topic=self._topic,
            aggregate_type=AGGREGATE_TYPE,
            aggregate_id=order_id,
            type=event_type,
            payload=payload,
            # the request's span (shared.tracing)
            traceparent=current_traceparent() if traceparent is None else traceparent,
        )

    async def create(self, order: OrderIn, principal: Principal) -> Stored[OrderOut]:
        """The new order; a retry of the same request returns the stored order."""
        ensure_seller(principal, order.seller_id)
        try:
            new = self._prepare(order, _utcnow())
        except InvalidOrder:
            OUTCOMES.labels("create", "invalid").inc()
            raise
        async with self._pool.acquire() as conn:
            if new.status == OrderStatus.PLACED:
                inserted = await repo.insert_order(conn, new)
            else:
                event = self._completed_message(new, order.items)
                inserted = await repo.insert_order_with_event(conn, new, event)
            if inserted:
                OUTCOMES.labels("create", "created").inc()
                return Stored(_new_order_out(new, order), created=True)
            row = await repo.get_order(conn, new.order_id)
        assert row is not None  # orders are never deleted
        # The hash covers seller_id: a match is this tenant's own earlier request. Another
        # seller's order with this id gets the same answer as a changed body of one's own.
        if bytes(row["request_hash"]) != new.request_hash:
            OUTCOMES.labels("create", "conflict").inc()
            raise IdempotencyConflict(
                f"order_id {new.order_id!r} is taken by an earlier request with a different "
                "body; an order_id can be posted again only with the same content"
            )
        OUTCOMES.labels("create", "duplicate").inc()
        return Stored(order_out(row), created=False)

    async def create_batch(
        self, orders: Sequence[OrderIn | FastOrder], principal: Principal
    ) -> int:
        """All or nothing: every order is valid and new or an exact retry, or none is kept.
        ``orders`` are ``BatchIn``'s, or ``decode_batch``'s (the same fields and values)."""
        denied = sorted({o.seller_id for o in orders if not principal.may_act_for(o.seller_id)})
        if denied:
            shown = ", ".join(map(repr, denied[:10]))
            raise Forbidden(f"token may not act for seller(s) {shown}")
        now = _utcnow()
        errors: list[FieldError] = []
        prepared: list[repo.NewOrder] = []
        seen: set[str] = set()
        for index, order in enumerate(orders):
            try:
                prepared.append(self._prepare(order, now, f"orders.{index}."))
            except InvalidOrder as exc:
                errors += exc.field_errors
            if order.order_id in seen:
                errors.append(
                    FieldError(f"orders.{index}.order_id", "appears more than once in the batch")
                )
            seen.add(order.order_id)
        if errors:
            OUTCOMES.labels("batch", "invalid").inc(len(orders))
            raise InvalidOrder(errors)
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await repo.insert_orders(conn, prepared)
            existing = [o for o in prepared if o.order_id not in inserted]
            if existing:
                hashes = await repo.request_hashes(conn, [o.order_id for o in existing])
                conflicts = [o.order_id for o in existing if hashes[o.order_id] != o.request_hash]
                if conflicts:
                    OUTCOMES.labels("batch", "conflict").inc(len(orders))
                    shown = ", ".join(repr(c) for c in conflicts[:10])
                    raise IdempotencyConflict(
                        f"{len(conflicts)} order(s) exist with a different body: {shown}; "
                        "nothing in this batch was accepted"
                    )
            traceparent = current_traceparent()
            completed = [
                (new, order)
                for new, order in zip(prepared, orders, strict=True)
                if new.status == OrderStatus.COMPLETED and new.order_id in inserted
            ]
            messages = [
                self._completed_message(new, order.items, traceparent, event_id)
                for (new, order), event_id in zip(
                    completed, _event_ids(len(completed)), strict=True
                )
            ]
            await enqueue(conn, messages)
        OUTCOMES.labels("batch", "created").inc(len(inserted))
        OUTCOMES.labels("batch", "duplicate").inc(len(existing))
        return len(orders)

    # -- moves on an existing order ---------------------------------------------------

    async def get(self, order_id: str, principal: Principal) -> OrderOut:
        async with self._pool.acquire() as conn:
            row = await repo.get_order(conn, order_id)
        return order_out(_visible(row, order_id, principal))

    async def complete(
        self, order_id: str, principal: Principal, completed_at: datetime | None
    ) -> OrderOut:
        now = _utcnow()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, order_id, principal)
            try:
                transition = domain.complete(OrderStatus(row["status"]))
            except domain.IllegalTransition:
                OUTCOMES.labels("complete", "illegal").inc()
                raise
            body = order_out(row)
            if not transition.changed:
                OUTCOMES.labels("complete", "duplicate").inc()
                return body
            at = completed_at or now
            if at < row["placed_at"] and completed_at is None:
                at = row["placed_at"]  # a storefront clock ahead of ours: keep the order sane
            errors = domain.check_completion(
                placed_at=row["placed_at"], completed_at=at, now=now, clock_skew=self._skew
            )
            if errors:
                OUTCOMES.labels("complete", "invalid").inc()
                raise InvalidOrder(errors)
            await repo.mark_completed(conn, order_id, at)
            new = repo.NewOrder(
                order_id=order_id,
                seller_id=row["seller_id"],
                buyer_ref=row["buyer_ref"],
                currency=row["currency"],
                total_minor=row["total_minor"],
                items_json="",
                placed_at=row["placed_at"],
                status=OrderStatus.COMPLETED,
                completed_at=at,
                request_hash=b"",
            )
            await enqueue(conn, [self._completed_message(new, row["items"])])
        OUTCOMES.labels("complete", "completed").inc()
        return body.model_copy(update={"status": OrderStatus.COMPLETED.value, "completed_at": at})

    async def cancel(self, order_id: str, principal: Principal) -> OrderOut:
        now = _utcnow()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, order_id, principal)
            try:
                transition = domain.cancel(OrderStatus(row["status"]))
            except domain.IllegalTransition:
                OUTCOMES.labels("cancel", "illegal").inc()
                raise
            body = order_out(row)
            if not transition.changed:
                OUTCOMES.labels("cancel", "duplicate").inc()
                return body
            await repo.mark_cancelled(conn, order_id, now)
            event = OrderCancelled(order_id=order_id, seller_id=row["seller_id"], occurred_at=now)
            await enqueue(conn, [self._message(order_id, event.type, encode(event))])
        OUTCOMES.labels("cancel", "cancelled").inc()
        return body.model_copy(update={"status": OrderStatus.CANCELLED.value, "cancelled_at": now})

    async def refund(
        self, order_id: str, principal: Principal, request: RefundIn
    ) -> Stored[RefundOut]:
        """Refund ids are scoped to the order (the order's row lock serialises them)."""
        fingerprint = domain.request_hash({"order_id": order_id, **request.model_dump()})
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, order_id, principal)
            previous = await repo.get_refund(conn, order_id, request.refund_id)
            if previous is not None:
                if bytes(previous["request_hash"]) != fingerprint:
                    OUTCOMES.labels("refund", "conflict").inc()
                    raise IdempotencyConflict(
                        f"refund {request.refund_id!r} of this order exists with a different "
                        "body; a refund_id can be posted again only with the same content"
                    )
                OUTCOMES.labels("refund", "duplicate").inc()
                return Stored(_refund_out(previous), created=False)
            try:
                result = domain.refund(
                    OrderStatus(row["status"]),
                    row["total_minor"],
                    row["refunded_minor"],
                    request.amount_minor,
                )
            except domain.IllegalTransition:
                OUTCOMES.labels("refund", "illegal").inc()
                raise
            except domain.RefundExceedsTotal as exc:
                OUTCOMES.labels("refund", "invalid").inc()
                raise InvalidOrder([FieldError("amount_minor", str(exc))]) from exc
            created_at = await repo.add_refund(
                conn,
                refund_id=request.refund_id,
                order_id=order_id,
                amount_minor=request.amount_minor,
                refunded_total_minor=result.refunded_total_minor,
                status=result.status,
                request_hash=fingerprint,
            )
            event = OrderRefunded(
                order_id=order_id,
                seller_id=row["seller_id"],
                refund_id=request.refund_id,
                amount_minor=request.amount_minor,
                refunded_total_minor=result.refunded_total_minor,
                total_minor=row["total_minor"],
                currency=row["currency"],
                placed_at=row["placed_at"],
                occurred_at=created_at,
            )
            await enqueue(conn, [self._message(order_id, event.type, encode(event))])
        OUTCOMES.labels("refund", "refunded").inc()
        refund = RefundOut(
            refund_id=request.refund_id,
            order_id=order_id,
            amount_minor=request.amount_minor,
            refunded_total_minor=result.refunded_total_minor,
            currency=row["currency"],
            status=result.status.value,
            created_at=created_at,
        )
        return Stored(refund, created=True)

    async def _locked(self, conn: Conn, order_id: str, principal: Principal) -> asyncpg.Record:
        row = await repo.get_order(conn, order_id, for_update=True)
        return _visible(row, order_id, principal)


def _visible(row: asyncpg.Record | None, order_id: str, principal: Principal) -> asyncpg.Record:
    """The order if this principal may see it. Another tenant's order is answered exactly
    like an unknown id (404): a 403 would confirm that the id exists and whose it is."""
    if row is None or not principal.may_act_for(row["seller_id"]):
        raise OrderNotFound(order_id)
    return row


def _refund_out(row: asyncpg.Record) -> RefundOut:
    refunded_total = row["refunded_total_minor"]
    return RefundOut(
        refund_id=row["refund_id"],
        order_id=row["order_id"],
        amount_minor=row["amount_minor"],
        refunded_total_minor=refunded_total,
        currency=row["currency"],
        status="refunded" if refunded_total == row["total_minor"] else "completed",
        created_at=row["created_at"],
    )
