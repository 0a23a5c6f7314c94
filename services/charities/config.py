"""Settings of the charities service (environment, prefix ``GFG_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from shared.settings import CommonSettings


class Settings(CommonSettings):
    charities_db: str = "charities"
    # Ledger entries per consumed batch: one transaction and one update of each project's
    # total row per batch, so larger batches mean fewer writes of the hottest rows (and
    # fewer probes of each project's sellers). 10,000 against 5,000 cut the CPU per entry
    # (BENCHMARKS.md, "The charities fold (evening of 2026-11-28)").
    ledger_batch_max: int = 10_000
    # How long a totals response is served from memory before the database is asked
    # again (the dashboard polls every second; the response says max-age=1).
    totals_cache_seconds: float = 0.5
    # A hot standby of the charities database (docs/OPERATIONS.md, "A read replica"), e.g.
    # postgresql://gfg@127.0.0.1:55433/charities: the public totals reads (all, project,
    # charity and daily totals) go there; registry, disbursements, the trace, migrations and
    # the ledger consumer stay on the primary. Unset: every read goes to the primary.
    charities_read_dsn: SecretStr | None = None
    charities_read_pool_max: int = Field(default=10, ge=1)
    # /readyz fails while the standby replays more than this far behind the primary (or
    # cannot be reached); the lag itself is on /metrics (gfg_charities_replica_lag_*).
    charities_read_max_lag_s: float = Field(default=30.0, gt=0)
    # False serves the API only (a read replica of the service, or a benchmark).
    charities_consume_ledger: bool = True
    # The donations service, asked for a project's matching campaigns (the dashboard
    # shows their remaining budgets); a short timeout, a small cache, and the last good
    # answer served as stale for a while when donations does not answer.
    donations_url: str = "http://127.0.0.1:8002"
    campaigns_timeout_s: float = 1.0
    campaigns_cache_seconds: float = 5.0
    campaigns_stale_s: float = 600.0
    # The donations log's verifier key (<name>+<hash>+<key>) the pages verify proofs
    # with; unset: the first key donations serves, pinned for the process's life.
    donations_verifier_key: str | None = None
    # The transparency log of disbursements and allocations: its origin (also the signing
    # key's name), the signer key string or, when unset, the file it is read from
    # (generated there, mode 0600, on first start), and pending records per sequencer
    # transaction. False runs no sequencer in this process (a read replica).
    charities_log_origin: str = "goods-for-good/charities"
    charities_log_key: SecretStr | None = None
    charities_log_key_file: Path = Path("var/charities-log-key")
    charities_log_batch: int = 5000
    charities_log_sequence: bool = True
