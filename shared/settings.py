"""Settings common to every service, read once from the environment (prefix ``GFG_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GFG_", extra="ignore", frozen=True)

    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_user: str = "gfg"
    pg_password: SecretStr = SecretStr("")
    pg_pool_min: int = 2
    pg_pool_max: int = 10

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Lets a second deployment (the test suite, say) share one broker without sharing topics.
    topic_prefix: str = ""
    topic_partitions: int = 12

    jwt_secret: SecretStr = Field(min_length=32)
    jwt_algorithm: str = "HS256"

    log_level: str = "INFO"
    log_json: bool = True

    def dsn(self, database: str) -> str:
        password = self.pg_password.get_secret_value()
        auth = f"{self.pg_user}:{password}" if password else self.pg_user
        return f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{database}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
