"""Settings of the donations service (env prefix ``GFG_``)."""

from __future__ import annotations

from shared.settings import CommonSettings


class Settings(CommonSettings):
    donations_db: str = "donations"
    charities_url: str = "http://127.0.0.1:8003"
    # A rule is never accepted unchecked: a slow charities service is an error (503).
    charities_timeout_s: float = 2.0
    # Project lookups are cached briefly: a burst of rule changes asks charities once.
    charities_cache_ttl_s: float = 3.0
    # Records per consumed batch: one transaction and four statements per batch.
    consumer_max_records: int = 5000
