"""The charities service layer: the registry's rules, totals reads behind a response
cache, and their domain errors. Owns the transactions; no SQL, no HTTP.

Decisions users can rely on:
- A charity's ``registration_no`` and a project's name within its charity are natural
  keys: creating the same one again returns the existing one with 200; the same key with
  different fields is 409.
- Closing a closed project is a retry and returns it unchanged (200).
- Totals are shaped as described in ``totals.py``; each totals URL is answered from
  memory for ``totals_cache_seconds`` (see ``ResponseCache``), or until this process's
  fold commits a batch when there is no replica, with a strong ETag. With a
  read replica configured they are read there (``replica.py`` says why their ETags and
  ``as_of`` agree across the two servers); everything else reads and writes the primary.
- A disbursement takes posted money first in, first out (``allocation.py``). Its
  transaction locks the project's row, so disbursements of one project take turns and
  none can take money another took: above the project's ``available_minor`` is a 422,
  also for the loser of two concurrent ones. The ``disbursement_id`` makes it idempotent:
  the same body again is the same disbursement (200), another body is a 409. An admin, or
  a charity token naming the project's charity, may disburse; anyone else gets 403.
- Every disbursement and allocation is in the charities transparency log (``log.py``);
  ``disbursement_proof`` serves a disbursement's leaves with inclusion proofs against
  one signed checkpoint, 503 (Retry-After: 1) until the checkpoint covers all of them.
- What a posting makes allocatable is net per order: the order's accruals minus its
  reversals, and per campaign its matches minus their match reversals, each spread over
  the positive entries oldest first (see ``repository.apply_postings``). Entries of an
  order that arrive after its posting stay pending (the contract says none come).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from services.charities import repository, totals
from services.charities.allocation import Candidate, InsufficientFunds, allocate_fifo
from services.charities.campaigns import CampaignList, DonationsClient, DonationsUnavailable
from services.charities.log import ALLOCATION_TABLE, DISBURSEMENT_TABLE
from services.charities.replica import Reads
from services.charities.repository import Row
from services.charities.schemas import (
    Charity,
    CharityCreate,
    CharityPage,
    Disbursement,
    DisbursementCreate,
    DisbursementPage,
    DisbursementProofEntryOut,
    DisbursementProofOut,
    DonationProof,
    OrderTrace,
    Project,
    ProjectCreate,
    ProjectPage,
)
from shared import pagination
from shared.auth import Principal
from shared.db import Pool
from shared.observability import get_logger
from shared.pagination import InvalidCursor, split_page
from shared.problems import Conflict, DomainError, Forbidden, Invalid, NotFound, Unavailable
from shared.tlog import store
from shared.tlog.api import LogReader, b64

log = get_logger(__name__)

ALL_TOTALS = "totals"  # the cache key of ``GET /v1/totals``
MAX_RANGE_DAYS = 3660

# --- errors and ids ---------------------------------------------------------------------


class CharityNotFound(NotFound):
    def __init__(self, charity_id: str) -> None:
        super().__init__("charity", charity_id)


class ProjectNotFound(NotFound):
    def __init__(self, project_id: str) -> None:
        super().__init__("project", project_id)


class RegistryConflict(Conflict):
    """A natural key (registration number, project name) taken with other details."""


class DisbursementNotFound(NotFound):
    def __init__(self, disbursement_id: str) -> None:
        super().__init__("disbursement", disbursement_id)


class OrderDonationNotFound(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__("donation of order", order_id)


class DonationsLogUnavailable(Unavailable):
    """The donations service could not give a proof or its key now (503, retry)."""

    title = "Donations log unavailable"

    def __init__(self) -> None:
        super().__init__("the donations log cannot answer right now", retry_after=1)


class DisbursementConflict(Conflict):
    """A disbursement_id used before with another body."""


class ProofNotReady(Unavailable):
    """The disbursement has leaves the served checkpoint does not cover yet (503, retry
    in 1 s: the sequencer signs a checkpoint within a second of new records)."""

    title = "Disbursement not in the log yet"

    def __init__(self, disbursement_id: str) -> None:
        super().__init__(
            f"disbursement {disbursement_id!r} is not in the log's checkpoint yet",
            retry_after=1,
        )


class LogNotServed(Unavailable):
    title = "No transparency log here"

    def __init__(self) -> None:
        super().__init__("this process serves no transparency log", retry_after=1)


class NotEnoughAvailable(DomainError):
    """More than the project's posted, not yet disbursed money."""

    status = 422
    kind = "not-enough-available"
    title = "Not enough available money"


def parse_id(value: str, missing: Callable[[str], NotFound]) -> uuid.UUID:
    """A path id: anything that is not a UUID names nothing, so it is a 404."""
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise missing(value) from exc


def check_range(start: date, end: date, max_days: int = MAX_RANGE_DAYS) -> None:
    if end < start:
        raise Invalid([("to", "must not be before 'from'")])
    if (end - start).days > max_days:
        raise Invalid([("to", f"a range spans at most {max_days} days")])


# --- list cursors -----------------------------------------------------------------------


def encode_cursor(created_at: datetime, key: uuid.UUID) -> str:
    return pagination.encode_cursor([created_at.isoformat(), str(key)])


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) position of a registry list cursor."""
    position = pagination.decode_cursor(cursor)
    if not isinstance(position, list) or len(position) != 2 or not isinstance(position[1], str):
        raise InvalidCursor()
    created_at = pagination.cursor_timestamp(position[0])
    try:
        return created_at, uuid.UUID(position[1])
    except ValueError as exc:
        raise InvalidCursor() from exc


def _page(rows: Sequence[Row], limit: int, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """Rows fetched with ``limit + 1``: the page and the cursor of the next one."""
    page, more = split_page(rows, limit)
    items = [dict(r) for r in page]
    if more:
        last = items[-1]
        return items, encode_cursor(last["created_at"], last[key])
    return items, None


# --- the service ------------------------------------------------------------------------


class CharityService:
    """The registry and the totals reads over this service's pool, with the response
    cache that spares the database the dashboards' polling, and the projects' campaigns
    relayed from the donations service."""

    def __init__(
        self,
        pool: Pool,
        *,
        totals_cache_seconds: float,
        donations: DonationsClient | None = None,
        campaigns_cache_seconds: float = 5.0,
        read_pool: Pool | None = None,
        donations_verifier_key: str | None = None,
        log: LogReader | None = None,
    ) -> None:
        self._pool = pool
        self._log = log
        # The totals reads: on ``read_pool`` (a hot standby) when given, else on ``pool``.
        self.reads = Reads(pool, read_pool)
        self.cache = ResponseCache(totals_cache_seconds)
        self._donations = donations
        self._verifier_key = donations_verifier_key
        self._campaigns_cache = ResponseCache(campaigns_cache_seconds)

    # -- registry -------------------------------------------------------------------------

    async def create_charity(self, body: CharityCreate) -> tuple[Charity, bool]:
        """The charity and whether it was created now (False: a retry of an earlier one)."""
        async with self._pool.acquire() as conn:
            row = await repository.insert_charity(
                conn, uuid.uuid4(), body.name, body.registration_no
            )
            if row is not None:
                return Charity.model_validate(dict(row)), True
            assert body.registration_no is not None
            existing = await repository.charity_by_registration_no(conn, body.registration_no)
        if existing is None:  # pragma: no cover - registration numbers are never deleted
            raise RegistryConflict("charity was created concurrently; retry")
        if existing["name"] != body.name:
            raise RegistryConflict(
                f"registration_no {body.registration_no!r} belongs to charity "
                f"{existing['charity_id']} named {existing['name']!r}",
                charity_id=str(existing["charity_id"]),
            )
        return Charity.model_validate(dict(existing)), False

    async def list_charities(self, limit: int, cursor: str | None) -> CharityPage:
        after = decode_cursor(cursor) if cursor else None
        async with self._pool.acquire() as conn:
            rows = await repository.list_charities(conn, after, limit + 1)
        items, next_cursor = _page(rows, limit, "charity_id")
        return CharityPage.model_validate({"items": items, "next_cursor": next_cursor})

    async def get_charity(self, charity_id: str) -> Charity:
        async with self._pool.acquire() as conn:
            row = await repository.get_charity(conn, parse_id(charity_id, CharityNotFound))
        if row is None:
            raise CharityNotFound(charity_id)
        return Charity.model_validate(dict(row))

    async def create_project(self, charity_id: str, body: ProjectCreate) -> tuple[Project, bool]:
        charity = await self.get_charity(charity_id)
        async with self._pool.acquire() as conn:
            row = await repository.insert_project(
                conn,
                uuid.uuid4(),
                charity.charity_id,
                body.name,
                body.description,
                body.currency,
                body.goal_minor,
            )
            if row is not None:
                return Project.model_validate(dict(row)), True
            existing = await repository.project_by_name(conn, charity.charity_id, body.name)
        if existing is None:  # pragma: no cover - projects are never deleted
            raise RegistryConflict("project was created concurrently; retry")
        same = (existing["description"], existing["currency"], existing["goal_minor"]) == (
            body.description,
            body.currency,
            body.goal_minor,
        )
        if not same:
            raise RegistryConflict(
                f"charity {charity_id} already has a project named {body.name!r} "
                f"({existing['project_id']}) with other details",
                project_id=str(existing["project_id"]),
            )
        return Project.model_validate(dict(existing)), False

    async def list_projects(
        self,
        *,
        charity_id: uuid.UUID | None,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> ProjectPage:
        after = decode_cursor(cursor) if cursor else None
        async with self._pool.acquire() as conn:
            rows = await repository.list_projects(
                conn, charity_id=charity_id, status=status, after=after, limit=limit + 1
            )
        items, next_cursor = _page(rows, limit, "project_id")
        return ProjectPage.model_validate({"items": items, "next_cursor": next_cursor})

    async def get_project(self, project_id: str) -> Project:
        async with self._pool.acquire() as conn:
            row = await repository.get_project(conn, parse_id(project_id, ProjectNotFound))
        if row is None:
            raise ProjectNotFound(project_id)
        return Project.model_validate(dict(row))

    async def close_project(self, project_id: str) -> Project:
        async with self._pool.acquire() as conn:
            row = await repository.close_project(conn, parse_id(project_id, ProjectNotFound))
        if row is None:
            raise ProjectNotFound(project_id)
        return Project.model_validate(dict(row))

    # -- disbursements and the trace -------------------------------------------------------

    async def create_disbursement(
        self, principal: Principal, project_id: str, body: DisbursementCreate
    ) -> tuple[Disbursement, bool]:
        """The disbursement and whether it was recorded now (False: a retry)."""
        key = parse_id(project_id, ProjectNotFound)
        async with self._pool.acquire() as conn, conn.transaction():
            project = await repository.lock_project(conn, key)
            if project is None:
                raise ProjectNotFound(project_id)
            if not principal.may_act_for_charity(str(project["charity_id"])):
                raise Forbidden(f"token may not disburse for charity {project['charity_id']}")
            existing = await repository.get_disbursement(conn, body.disbursement_id)
            if existing is not None:
                return _same_disbursement(existing, key, body), False
            currency: str = project["currency"]
            available = await repository.available_minor(conn, key, currency)
            if body.amount_minor > available:
                raise _not_enough(body.amount_minor, available)
            candidates = await repository.fifo_candidates(conn, key, currency, body.amount_minor)
            try:
                allocations = allocate_fifo(
                    body.amount_minor,
                    (Candidate(r["entry_id"], r["remaining_minor"]) for r in candidates),
                )
            except InsufficientFunds as exc:  # pragma: no cover - posted - disbursed says so
                raise _not_enough(body.amount_minor, exc.available_minor) from exc
            row = await repository.insert_disbursement(
                conn,
                disbursement_id=body.disbursement_id,
                project_id=key,
                currency=currency,
                amount_minor=body.amount_minor,
                recipient=body.recipient,
                purpose=body.purpose,
                evidence_sha256=body.evidence_sha256,
                evidence_url=body.evidence_url,
                entry_ids=[a.entry_id for a in allocations],
                amounts=[a.amount_minor for a in allocations],
            )
            if row is None:  # the same id recorded concurrently (for another project)
                existing = await repository.get_disbursement(conn, body.disbursement_id)
                assert existing is not None
                return _same_disbursement(existing, key, body), False
            await repository.bump_clock(conn)
            await repository.add_disbursed(conn, key, currency, body.amount_minor)
        return Disbursement.model_validate(dict(row)), True

    async def get_disbursement(self, disbursement_id: str) -> Disbursement:
        key = parse_id(disbursement_id, DisbursementNotFound)
        async with self._pool.acquire() as conn:
            row = await repository.get_disbursement(conn, key)
        if row is None:
            raise DisbursementNotFound(disbursement_id)
        return Disbursement.model_validate(dict(row))

    async def disbursement_proof(self, disbursement_id: str) -> DisbursementProofOut:
        """The disbursement's leaf and its allocations' leaves, each with its inclusion
        proof against one signed checkpoint: 404 if unknown, 503 (Retry-After) while any
        of them is not covered by the served checkpoint yet."""
        key = parse_id(disbursement_id, DisbursementNotFound)
        if self._log is None:
            raise LogNotServed()
        checkpoint = await self._log.checkpoint()
        async with self._pool.acquire() as conn:
            keys = await repository.disbursement_log_keys(conn, key)
            if keys is None:
                raise DisbursementNotFound(disbursement_id)
            own, allocations = keys
            leaves = [
                *(await store.record_leaves(conn, DISBURSEMENT_TABLE, [own])).values(),
                *(await store.record_leaves(conn, ALLOCATION_TABLE, allocations)).values(),
            ]
            if len(leaves) != 1 + len(allocations) or any(
                index >= checkpoint.size for index, _ in leaves
            ):
                raise ProofNotReady(disbursement_id)
            leaves = leaves[:1] + sorted(leaves[1:])
            proofs = await self._log.inclusion_proofs(
                conn, checkpoint.size, [index for index, _ in leaves]
            )
        return DisbursementProofOut(
            disbursement_id=key,
            checkpoint=checkpoint.note.decode("utf-8"),
            entries=[
                DisbursementProofEntryOut(
                    leaf_index=index, leaf_b64=b64(leaf), inclusion_proof=[b64(h) for h in proof]
                )
                for (index, leaf), proof in zip(leaves, proofs, strict=True)
            ],
        )

    async def list_disbursements(
        self, project_id: str, limit: int, cursor: str | None
    ) -> DisbursementPage:
        key = parse_id(project_id, ProjectNotFound)
        after = decode_cursor(cursor) if cursor else None
        async with self._pool.acquire() as conn:
            if await repository.get_project(conn, key) is None:
                raise ProjectNotFound(project_id)
            rows = await repository.list_disbursements(conn, key, after, limit + 1)
        page, more = split_page(rows, limit)
        items = [dict(r) for r in page]
        next_cursor = (
            encode_cursor(items[-1]["recorded_at"], items[-1]["disbursement_id"]) if more else None
        )
        return DisbursementPage.model_validate({"items": items, "next_cursor": next_cursor})

    async def trace(self, order_id: str) -> OrderTrace:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            summary = await repository.order_summary(conn, order_id)
            if summary is None:
                raise OrderDonationNotFound(order_id)
            allocations = await repository.order_allocations(conn, order_id)
        allocated = sum(int(a["amount_minor"]) for a in allocations)
        return OrderTrace.model_validate(
            {
                "order_id": order_id,
                "project_id": summary["project_id"],
                "currency": summary["currency"],
                "net_minor": summary["net_minor"],
                "matched_minor": summary["matched_minor"],
                "status": "posted" if summary["posted"] else "pending",
                "allocations": [dict(a) for a in allocations],
                "unallocated_minor": summary["net_minor"] + summary["matched_minor"] - allocated,
            }
        )

    # -- totals (JSON bytes and their ETag, from the cache) -------------------------------

    def fresh_all_totals(self) -> Cached | None:
        """The cached ``/v1/totals`` while it is fresh (the fast path's lookup)."""
        return self.cache.fresh(ALL_TOTALS)

    async def all_totals(self) -> Cached:
        async def read(pool: Pool, previous: Cached | None) -> Cached:
            async with pool.acquire() as conn:
                clock = await repository.clock(conn)
                if previous is not None and previous.token == clock["version"]:
                    return Cached(previous.etag, previous.body, previous.token, 0.0)
                async with conn.transaction(isolation="repeatable_read"):
                    clock = await repository.clock(conn)
                    rows = await repository.all_totals(conn)
            raw = totals.dumps(totals.all_totals_body(rows, clock["changed_at"]))
            # The version, not a hash: one integer compare decides 304 on every poll. Every
            # change of a row this body shows bumps it in the same transaction.
            return Cached(f'"v{clock["version"]}"', raw, clock["version"], 0.0)

        async def load(previous: Cached | None) -> Cached:
            return await self.reads.run(lambda pool: read(pool, previous))

        return await self.cache.get(ALL_TOTALS, load)

    async def project_totals(self, project_id: str) -> Cached:
        key = parse_id(project_id, ProjectNotFound)

        async def read(pool: Pool) -> Cached:
            async with pool.acquire() as conn:
                rows = await repository.project_totals(conn, key)
            return _by_body(_project_totals_body(project_id, rows))

        async def load(previous: Cached | None) -> Cached:
            return await self.reads.run(read)

        return await self.cache.get(f"project:{key}", load)

    async def charity_totals(self, charity_id: str) -> Cached:
        key = parse_id(charity_id, CharityNotFound)

        async def read(pool: Pool) -> Cached:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                if await repository.get_charity(conn, key) is None:
                    raise CharityNotFound(charity_id)
                rows = await repository.charity_totals(conn, key)
            return _by_body(totals.charity_totals_body(key, rows))

        async def load(previous: Cached | None) -> Cached:
            return await self.reads.run(read)

        return await self.cache.get(f"charity:{key}", load)

    async def daily_totals(self, project_id: str, start: date, end: date) -> Cached:
        key = parse_id(project_id, ProjectNotFound)
        check_range(start, end)

        async def read(pool: Pool) -> Cached:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                project = _project_totals_body(
                    project_id, await repository.project_totals(conn, key)
                )
                rows = await repository.daily_totals(conn, key, project["currency"], start, end)
            return _by_body(totals.daily_body(rows))

        async def load(previous: Cached | None) -> Cached:
            return await self.reads.run(read)

        return await self.cache.get(f"daily:{key}:{start}:{end}", load)

    # -- campaigns (the donations service's data, relayed for the dashboard) --------------

    async def project_campaigns(self, project_id: str) -> Cached:
        """The project's matching campaigns as the donations service reports them, through
        a per-project cache; degraded (``stale`` or ``unavailable``), never an error, when
        donations does not answer. 404 for a project the registry does not know."""
        key = parse_id(project_id, ProjectNotFound)

        async def load(previous: Cached | None) -> Cached:
            async with self._pool.acquire() as conn:
                if await repository.get_project(conn, key) is None:
                    raise ProjectNotFound(project_id)
            if self._donations is None:  # a registry-only instance (tools, benchmarks)
                found = CampaignList((), "unavailable", None)
            else:
                found = await self._donations.project_campaigns(key, datetime.now(UTC))
            body = {
                "project_id": key,
                "source": found.source,
                "fetched_at": found.fetched_at,
                "items": [c.model_dump() for c in found.items],
            }
            return _by_body(body)

        return await self._campaigns_cache.get(f"campaigns:{key}", load)

    # -- the donations log (relayed for the pages' "check my donation") -----------------

    async def donation_proof(self, order_id: str) -> DonationProof:
        """The order's proof as the donations service serves it, unverified (the page
        verifies it): 404 if donations knows no donation of the order, 503 while it is
        not logged yet or donations does not answer."""
        if self._donations is None:
            raise DonationsLogUnavailable()
        try:
            proof = await self._donations.order_proof(order_id)
        except DonationsUnavailable as exc:
            log.warning("donations proof unavailable", error=str(exc))
            raise DonationsLogUnavailable() from exc
        if proof is None:
            raise OrderDonationNotFound(order_id)
        return proof

    async def donations_verifier_key(self) -> str:
        """The donations log's verifier key: the configured one, else the first one
        donations served (pinned: a later change of donations' key is not followed)."""
        if self._verifier_key is None:
            if self._donations is None:
                raise DonationsLogUnavailable()
            try:
                self._verifier_key = await self._donations.log_key()
            except DonationsUnavailable as exc:
                log.warning("donations log key unavailable", error=str(exc))
                raise DonationsLogUnavailable() from exc
        return self._verifier_key


def _not_enough(amount_minor: int, available_minor: int) -> NotEnoughAvailable:
    return NotEnoughAvailable(
        f"amount_minor {amount_minor} exceeds the project's available_minor {available_minor}",
        errors=[{"field": "amount_minor", "message": "exceeds the project's available money"}],
        available_minor=available_minor,
    )


def _same_disbursement(
    existing: Row, project_id: uuid.UUID, body: DisbursementCreate
) -> Disbursement:
    """The recorded disbursement if ``body`` asks for it again; else a 409."""
    recorded = Disbursement.model_validate(dict(existing))
    asked = (
        project_id,
        body.amount_minor,
        body.recipient,
        body.purpose,
        body.evidence_sha256,
        body.evidence_url,
    )
    have = (
        recorded.project_id,
        recorded.amount_minor,
        recorded.recipient,
        recorded.purpose,
        recorded.evidence_sha256,
        recorded.evidence_url,
    )
    if asked != have:
        raise DisbursementConflict(
            f"disbursement {body.disbursement_id} was recorded with another body",
            disbursement_id=str(body.disbursement_id),
        )
    return recorded


def _project_totals_body(project_id: str, rows: Sequence[Row]) -> dict[str, Any]:
    body = totals.project_totals_body(rows)
    if body is None:
        raise ProjectNotFound(project_id)
    return body


def _by_body(body: Any) -> Cached:
    raw = totals.dumps(body)
    return Cached(totals.body_etag(raw), raw, None, 0.0)


# --- a tiny read cache --------------------------------------------------------------------


@dataclass
class Cached:
    etag: str
    body: bytes
    token: Any  # what the loader compares to decide whether to rebuild (a version)
    fresh_until: float


class ResponseCache:
    """Keeps the last (ETag, body) of each totals URL for ``ttl`` seconds, one loader at a
    time per URL, so a room of dashboards polling every second costs the database a few
    cheap queries per second instead of one per request."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[str, Cached] = {}
        self._loading: dict[str, asyncio.Future[Cached]] = {}

    def expire(self) -> None:
        """Makes every entry stale (kept as ``previous`` for the loaders' version check):
        the fold calls it after each batch it committed, so that a read after the fold
        reloads at once instead of serving the old totals for up to ``ttl``."""
        for cached in self._entries.values():
            cached.fresh_until = 0.0

    def fresh(self, key: str) -> Cached | None:
        cached = self._entries.get(key)
        if cached is not None and cached.fresh_until > time.monotonic():
            return cached
        return None

    async def get(self, key: str, load: Callable[[Cached | None], Awaitable[Cached]]) -> Cached:
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and cached.fresh_until > now:
            return cached
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Cached] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            fresh = await load(cached)
            fresh.fresh_until = time.monotonic() + self.ttl
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = fresh
            future.set_result(fresh)
            return fresh
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._loading[key]
