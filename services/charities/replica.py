"""The read replica of the charities database: a pool on a PostgreSQL hot standby that
serves the public totals reads, its lag behind the primary, and the rule for when a read
falls back to the primary.

Why a totals response is the same on both servers (docs/OPERATIONS.md, "A read
replica"): everything in it, ``as_of`` included, is read from rows the primary wrote
(``change_clock``, ``project_total.updated_at``, ``project_funds.updated_at``, the
registry's ``created_at``), never from the serving process's clock, and each ETag is a
function of the data: ``"v<change_clock.version>"`` for ``GET /v1/totals`` and a hash of
the body's bytes for the other totals. A standby replays the primary's transactions in
commit order and a read sees a snapshot of a replayed prefix, so it answers with the
state the primary had at some earlier version: the same data gives the same bytes and
the same ETag on both, and an ETag of a later version than the standby has replayed
matches nothing the standby can produce (304 only for what it holds, 200 otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter, Gauge

from services.charities import repository
from shared import db
from shared.db import Pool
from shared.observability import get_logger
from shared.problems import NotFound

log = get_logger(__name__)
T = TypeVar("T")

LAG_SECONDS = Gauge(
    "gfg_charities_replica_lag_seconds",
    "How far the totals' read replica replays behind the primary (0 when caught up)",
)
LAG_BYTES = Gauge(
    "gfg_charities_replica_lag_bytes",
    "Bytes of the primary's WAL the totals' read replica has not replayed yet",
)
FALLBACKS = Counter(
    "gfg_charities_replica_fallbacks_total",
    "Totals reads the primary answered because the replica failed or lacked the row",
)


class ReplicaLagging(Exception):
    """The standby replays further behind than the readiness bound allows."""


@dataclass(frozen=True)
class Lag:
    in_recovery: bool
    bytes_behind: int
    seconds_behind: float


class Reads:
    """Where the totals reads go: the replica's pool when there is one, else the primary's.

    A read that fails on the replica because it cannot be reached (a transient database
    error or a refused connection) is asked of the primary instead, and so is one for an id
    the replica does not know yet (a charity or project created a moment ago): the answer
    is then the primary's, which is never older than the replica's.
    """

    def __init__(self, primary: Pool, replica: Pool | None = None) -> None:
        self.primary = primary
        self.replica = replica

    async def run(self, read: Callable[[Pool], Awaitable[T]]) -> T:
        if self.replica is None:
            return await read(self.primary)
        try:
            return await read(self.replica)
        except NotFound:
            pass
        except Exception as exc:
            if not (db.is_transient(exc) or isinstance(exc, OSError)):
                raise
            log.warning("totals read replica failed; reading the primary", error=repr(exc))
        FALLBACKS.inc()
        return await read(self.primary)

    async def lag(self) -> Lag:
        """The replica's replay position against the primary's WAL; zeros without one."""
        if self.replica is None:
            return Lag(False, 0, 0.0)
        async with self.replica.acquire() as conn:
            status = await repository.replay_status(conn)
        if not status["in_recovery"]:  # a primary given as the read DSN: nothing to replay
            return Lag(False, 0, 0.0)
        async with self.primary.acquire() as conn:
            behind = await repository.wal_bytes_behind(conn, status["replayed"])
        seconds = 0.0
        if behind > 0 and status["replayed_at"] is not None:
            # The time since the last replayed commit: an upper bound right after a quiet
            # stretch on the primary (its first new commit is "behind" by the quiet time).
            seconds = max(0.0, (status["now"] - status["replayed_at"]).total_seconds())
        return Lag(True, behind, seconds)

    def readiness(self, max_lag_s: float) -> Callable[[], Awaitable[None]]:
        """A /readyz check: fails when the replica is unreachable or lags beyond
        ``max_lag_s``; records the lag on /metrics."""

        async def check() -> None:
            lag = await self.lag()
            LAG_BYTES.set(lag.bytes_behind)
            LAG_SECONDS.set(lag.seconds_behind)
            if lag.seconds_behind > max_lag_s:
                raise ReplicaLagging(
                    f"replica replays {lag.seconds_behind:.1f} s ({lag.bytes_behind} bytes) "
                    f"behind the primary; the bound is {max_lag_s} s"
                )

        return check
