"""Asks the charities service whether a project exists, is active, and in which currency.

A short timeout and a small TTL cache: a burst of rule changes asks once per project, and
a charities outage fails the rule change (503) instead of accepting an unchecked rule.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx

from shared.observability import get_logger

log = get_logger(__name__)


class CharitiesUnavailable(Exception):
    """The charities service could not answer (down, slow, 5xx or a garbled reply)."""


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    project_id: uuid.UUID
    status: str
    currency: str

    @property
    def active(self) -> bool:
        return self.status == "active"


class CharitiesClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 2.0,
        cache_ttl_s: float = 3.0,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._ttl = cache_ttl_s
        self._cache: dict[uuid.UUID, tuple[float, ProjectInfo]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def project(self, project_id: uuid.UUID) -> ProjectInfo | None:
        """The project, or None if charities does not know it (404; never cached)."""
        now = time.monotonic()
        cached = self._cache.get(project_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            response = await self._http.get(f"/v1/projects/{project_id}")
        except httpx.HTTPError as exc:
            log.warning("charities unreachable", error=f"{type(exc).__name__}: {exc}")
            raise CharitiesUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CharitiesUnavailable(f"charities answered {response.status_code}")
        try:
            body = response.json()
            info = ProjectInfo(project_id, str(body["status"]), str(body["currency"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CharitiesUnavailable(f"unexpected charities reply: {exc}") from exc
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[project_id] = (now + self._ttl, info)
        return info
