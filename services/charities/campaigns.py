"""Asks the donations service for a project's matching campaigns, and for an order's
proof in the donations log and that log's verifier key, for the pages.

The dashboard page is served by this service under a strict CSP (``connect-src 'self'``),
so it cannot call the donations service itself; ``GET /v1/projects/{id}/campaigns`` here
relays the answer. Campaigns are the donations service's data: nothing is stored here.

What users can rely on:
- A short timeout (``GFG_CAMPAIGNS_TIMEOUT_S``) and a small per-project cache (see
  ``CharityService.project_campaigns``): a room of dashboards costs donations one request
  per project every few seconds.
- Proofs are relayed as donations serves them, never cached or trusted here: the page
  verifies them itself against the verifier key, which this service pins (configured, or
  the first one donations serves, kept for the process's life).
- Campaigns degrade, never fail: when donations is down, slow or answers garbage, the answer
  is the last good list marked ``stale`` (for ``GFG_CAMPAIGNS_STALE_S`` seconds), or an
  empty list marked ``unavailable``; the totals (this service's own data) are unaffected.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from services.charities.schemas import DonationProof
from shared.observability import get_logger

log = get_logger(__name__)

MAX_PAGES = 5  # a project has a handful of campaigns; more pages than this is not a project
# A Go sumdb/note verifier key: <name>+<8 hex digits of key hash>+<base64 key>.
VERIFIER_KEY = re.compile(r"[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+={0,2}")


class DonationsUnavailable(Exception):
    """The donations service could not answer (down, slow, non-200 or a garbled reply)."""


class CampaignSummary(BaseModel):
    """The fields of a donations campaign the dashboard shows (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    campaign_id: str
    sponsor: str
    project_id: uuid.UUID
    currency: str
    ratio_bp: int
    per_item_minor: int | None = None
    per_order_cap_minor: int | None = None
    budget_minor: int
    matched_minor: int
    remaining_minor: int
    starts_at: datetime
    ends_at: datetime
    status: str


class _CampaignPage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    items: list[CampaignSummary]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class CampaignList:
    """A project's campaigns and how fresh they are: ``live`` (just asked), ``stale`` (the
    last good answer; donations did not answer now) or ``unavailable`` (no answer yet)."""

    items: tuple[CampaignSummary, ...]
    source: str
    fetched_at: datetime | None


class DonationsClient:
    def __init__(self, base_url: str, *, timeout_s: float = 1.0, stale_s: float = 600.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._stale_s = stale_s
        self._last_good: dict[uuid.UUID, tuple[float, CampaignList]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def project_campaigns(self, project_id: uuid.UUID, now: datetime) -> CampaignList:
        """The project's campaigns in (starts_at, campaign_id) order, the order they match
        in; never raises for an unreachable donations service."""
        try:
            items = await self._fetch(project_id)
        except DonationsUnavailable as exc:
            log.warning("donations unreachable for campaigns", error=str(exc))
            last = self._last_good.get(project_id)
            if last is not None and time.monotonic() - last[0] <= self._stale_s:
                return CampaignList(last[1].items, "stale", last[1].fetched_at)
            return CampaignList((), "unavailable", None)
        fresh = CampaignList(items, "live", now)
        if len(self._last_good) >= 10_000:
            self._last_good.clear()
        self._last_good[project_id] = (time.monotonic(), fresh)
        return fresh

    async def order_proof(self, order_id: str) -> DonationProof | None:
        """The order's proof in the donations log (None: donations knows no donation of
        it); raises ``DonationsUnavailable`` otherwise, its 503 "not logged yet" included."""
        path = f"/v1/orders/{urllib.parse.quote(order_id, safe='')}/donation/proof"
        response = await self._get(path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DonationsUnavailable(f"donations answered {response.status_code}")
        try:
            proof = DonationProof.model_validate_json(response.content)
        except ValidationError as exc:
            raise DonationsUnavailable(f"unexpected donations reply: {exc}") from exc
        if proof.order_id != order_id:
            raise DonationsUnavailable("donations answered for another order")
        return proof

    async def log_key(self) -> str:
        """The donations log's verifier key as donations serves it."""
        response = await self._get("/v1/log/key")
        key = response.text.strip()
        if response.status_code != 200 or not VERIFIER_KEY.fullmatch(key):
            raise DonationsUnavailable(f"no verifier key from donations ({response.status_code})")
        return key

    async def _get(self, path: str) -> httpx.Response:
        try:
            return await self._http.get(path)
        except httpx.HTTPError as exc:
            raise DonationsUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _fetch(self, project_id: uuid.UUID) -> tuple[CampaignSummary, ...]:
        found: list[CampaignSummary] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = {"project_id": str(project_id), "limit": "1000"}
            if cursor is not None:
                params["cursor"] = cursor
            try:
                response = await self._http.get("/v1/campaigns", params=params)
            except httpx.HTTPError as exc:
                raise DonationsUnavailable(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code != 200:
                raise DonationsUnavailable(f"donations answered {response.status_code}")
            try:
                page = _CampaignPage.model_validate_json(response.content)
            except ValidationError as exc:
                raise DonationsUnavailable(f"unexpected donations reply: {exc}") from exc
            # filtered here too: the answer must be this project's whatever the server does
            found.extend(c for c in page.items if c.project_id == project_id)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tuple(sorted(found, key=lambda c: (c.starts_at, c.campaign_id)))
