"""Settings of the donations service (env prefix ``GFG_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

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
    # The transparency log: its origin (also the signing key's name), the signer key string
    # or, when unset, the file it is read from (generated there, mode 0600, on first start).
    donations_log_origin: str = "goods-for-good/donations"
    donations_log_key: SecretStr | None = None
    donations_log_key_file: Path = Path("var/donations-log-key")
    # Pending records per sequencer transaction.
    donations_log_batch: int = 5000
