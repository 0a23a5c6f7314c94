"""Settings of the donations service (env prefix ``GFG_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from shared.settings import CommonSettings


class Settings(CommonSettings):
    donations_db: str = "donations"
    charities_url: str = "http://127.0.0.1:8003"
    # A rule is never accepted unchecked: a slow charities service is an error (503).
    charities_timeout_s: float = 2.0
    # Project lookups are cached briefly: a burst of rule changes asks charities once.
    charities_cache_ttl_s: float = 3.0
    # Records per consumed batch: one transaction (at most six statements) per batch.
    consumer_max_records: int = 5000
    # The transparency log: its origin (also the signing key's name), the signer key string
    # or, when unset, the file it is read from (generated there, mode 0600, on first start).
    donations_log_origin: str = "goods-for-good/donations"
    donations_log_key: SecretStr | None = None
    donations_log_key_file: Path = Path("var/donations-log-key")
    # Pending records per sequencer transaction.
    donations_log_batch: int = 5000
    # The return window: a donation is pending for this long after its order's
    # completed_at, then posted (final).
    return_window_s: int = Field(default=604_800, ge=0)
    # How far event time may trail the posting job's clock and the partition watermark
    # (relay delay of the orders outbox, clock skew); see posting.py.
    posting_grace_s: float = Field(default=3_600.0, ge=0)
    posting_interval_s: float = Field(default=30.0, gt=0)
    posting_batch_size: int = Field(default=2_000, ge=1)
    posting_enabled: bool = True
