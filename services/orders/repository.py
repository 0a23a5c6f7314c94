"""Every SQL statement of the orders service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared import outbox
from shared.db import Conn
from shared.outbox import OutboxMessage

_ORDER_COLUMNS = """
order_id, seller_id, buyer_ref, currency, total_minor, items, placed_at, status,
completed_at, cancelled_at, refunded_minor, request_hash
"""


@dataclass(frozen=True)
class NewOrder:
    order_id: str
    seller_id: str
    buyer_ref: str | None
    currency: str
    total_minor: int
    items_json: str
    placed_at: datetime
    status: str
    completed_at: datetime | None
    request_hash: bytes


_INSERT_ONE = """
INSERT INTO sales_order (order_id, seller_id, buyer_ref, currency, total_minor, items,
                         placed_at, status, completed_at, request_hash)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10)
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
"""

_INSERT_MANY = """
INSERT INTO sales_order (order_id, seller_id, buyer_ref, currency, total_minor, items,
                         placed_at, status, completed_at, request_hash)
SELECT o, s, b, c, t, i::jsonb, p, st, ca, h
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
            $7::timestamptz[], $8::text[], $9::timestamptz[], $10::bytea[])
     AS u(o, s, b, c, t, i, p, st, ca, h)
ORDER BY o
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
"""


def _order_args(order: NewOrder) -> tuple[Any, ...]:
    """$1..$10 of the single-order inserts."""
    return (
        order.order_id,
        order.seller_id,
        order.buyer_ref,
        order.currency,
        order.total_minor,
        order.items_json,
        order.placed_at,
        order.status,
        order.completed_at,
        order.request_hash,
    )


async def insert_order(conn: Conn, order: NewOrder) -> bool:
    """True if inserted, False if an order with this id exists already."""
    inserted = await conn.fetchval(_INSERT_ONE, *_order_args(order))
    return inserted is not None


_INSERT_ONE_WITH_EVENT = f"""
WITH created AS (
    INSERT INTO sales_order (order_id, seller_id, buyer_ref, currency, total_minor, items,
                             placed_at, status, completed_at, request_hash)
    VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
)
{outbox.INSERT_INTO}
SELECT $11, $12, $13, $14, $15, $16 FROM created
RETURNING id
"""


async def insert_order_with_event(conn: Conn, order: NewOrder, event: OutboxMessage) -> bool:
    """``insert_order`` and, if inserted, its outbox row (``shared.outbox``'s insert
    folded into this statement): one transaction in one round trip, the hot path of single
    ingest (``enqueue`` in a transaction needs four)."""
    assert event.aggregate_id == order.order_id
    inserted = await conn.fetchval(
        _INSERT_ONE_WITH_EVENT, *_order_args(order), *outbox.message_args(event)
    )
    return inserted is not None


async def insert_orders(conn: Conn, orders: Sequence[NewOrder]) -> set[str]:
    """Inserts the orders whose id is new, in one statement; returns their ids."""
    rows = await conn.fetch(
        _INSERT_MANY,
        [o.order_id for o in orders],
        [o.seller_id for o in orders],
        [o.buyer_ref for o in orders],
        [o.currency for o in orders],
        [o.total_minor for o in orders],
        [o.items_json for o in orders],
        [o.placed_at for o in orders],
        [o.status for o in orders],
        [o.completed_at for o in orders],
        [o.request_hash for o in orders],
    )
    return {r["order_id"] for r in rows}


async def request_hashes(conn: Conn, order_ids: Sequence[str]) -> dict[str, bytes]:
    rows = await conn.fetch(
        "SELECT order_id, request_hash FROM sales_order WHERE order_id = ANY($1::text[])",
        list(order_ids),
    )
    return {r["order_id"]: bytes(r["request_hash"]) for r in rows}


async def get_order(
    conn: Conn, order_id: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_ORDER_COLUMNS} FROM sales_order WHERE order_id = $1{lock}", order_id
    )
    return row


async def mark_completed(conn: Conn, order_id: str, completed_at: datetime) -> None:
    await conn.execute(
        "UPDATE sales_order SET status = 'completed', completed_at = $2, updated_at = now() "
        "WHERE order_id = $1",
        order_id,
        completed_at,
    )


async def mark_cancelled(conn: Conn, order_id: str, cancelled_at: datetime) -> None:
    await conn.execute(
        "UPDATE sales_order SET status = 'cancelled', cancelled_at = $2, updated_at = now() "
        "WHERE order_id = $1",
        order_id,
        cancelled_at,
    )


async def get_refund(conn: Conn, order_id: str, refund_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT r.refund_id, r.order_id, r.amount_minor, r.refunded_total_minor, "
        "r.request_hash, r.created_at, o.total_minor, o.currency "
        "FROM order_refund r JOIN sales_order o USING (order_id) "
        "WHERE r.order_id = $1 AND r.refund_id = $2",
        order_id,
        refund_id,
    )
    return row


async def add_refund(
    conn: Conn,
    *,
    refund_id: str,
    order_id: str,
    amount_minor: int,
    refunded_total_minor: int,
    status: str,
    request_hash: bytes,
) -> datetime:
    """Records the refund and the order's new refunded total; returns its created_at."""
    created_at: datetime = await conn.fetchval(
        """
        WITH refund AS (
            INSERT INTO order_refund
                (refund_id, order_id, amount_minor, refunded_total_minor, request_hash)
            VALUES ($1, $2, $3, $4, $6)
            RETURNING created_at
        ), upd AS (
            UPDATE sales_order SET refunded_minor = $4, status = $5, updated_at = now()
            WHERE order_id = $2
        )
        SELECT created_at FROM refund
        """,
        refund_id,
        order_id,
        amount_minor,
        refunded_total_minor,
        status,
        request_hash,
    )
    return created_at
