"""Settings of the orders service (env ``GFG_*``)."""

from __future__ import annotations

from shared.settings import CommonSettings


class Settings(CommonSettings):
    orders_db: str = "orders"
    # How far in the future a storefront's clock may put placed_at / completed_at.
    clock_skew_seconds: int = 300
    # Off only for tests and tools that drive their own relay.
    relay_enabled: bool = True
    relay_batch_size: int = 5000
