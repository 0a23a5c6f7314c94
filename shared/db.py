"""asyncpg pools with JSON codecs backed by orjson, and the connection types every
repository takes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

# What a repository function takes: a plain connection or one acquired from a pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

if TYPE_CHECKING:
    Pool = asyncpg.Pool[Any]
else:  # asyncpg's classes are not generic at runtime
    Pool = asyncpg.Pool


def is_transient(exc: BaseException) -> bool:
    """Database errors that mean 'try again later' (down, restarting, overloaded, a
    deadlock or serialization failure), never 'the data is bad'."""
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.DeadlockDetectedError
        | asyncpg.SerializationError
        | asyncpg.AdminShutdownError,
    )


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """A pooled connection goes back as it is: no session state to undo.

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release, one more round trip per request (a third of a short
    read's cost). Nothing here leaves session state on a pooled connection: session
    advisory locks and LISTEN (outbox relay, log sequencer, migrations) run on
    connections of their own, there is no SET and no cursor WITH HOLD. asyncpg still
    rolls back a transaction left open before this is called."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool[Any]:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=60,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection[Any]:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn
