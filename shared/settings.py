"""Settings common to every service, read once from the environment (prefix ``GFG_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
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
    # New topics' replication; a three-broker cluster (`make run KAFKA_NODES=3`) sets 3 and 2,
    # so an acks=all write is on two brokers before it is acknowledged.
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync: int = Field(default=1, ge=1)
    # How every producer, consumer and admin client reaches the brokers (aiokafka's
    # options). PLAINTEXT is for a local broker only; production uses SASL_SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_plain_username: str | None = None
    kafka_sasl_plain_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None

    # Token verification: exactly one of the HS256 platform secret (the local default) or the
    # issuer's Ed25519 public key, as a PEM file or a JWKS file. With a public key the service
    # accepts only EdDSA tokens and holds nothing that can mint one.
    jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_issuer: str = Field(default="gfg-local", min_length=1)
    jwt_audience: str = Field(default="goods-for-good", min_length=1)
    jwt_max_lifetime_s: int = Field(default=86_400, gt=0)
    jwt_iat_leeway_s: int = Field(default=30, ge=0, le=300)

    log_level: str = "INFO"
    log_json: bool = True
    # Where spans go as JSON lines (<dir>/<service>.jsonl) when no OTLP endpoint is set
    # (OTEL_EXPORTER_OTLP_ENDPOINT); see shared/tracing.py.
    traces_dir: Path = Path("var/traces")

    @model_validator(mode="after")
    def _min_insync_within_replicas(self) -> Self:
        if self.kafka_min_insync > self.kafka_replication_factor:
            raise ValueError(
                f"GFG_KAFKA_MIN_INSYNC ({self.kafka_min_insync}) exceeds "
                f"GFG_KAFKA_REPLICATION_FACTOR ({self.kafka_replication_factor})"
            )
        return self

    @model_validator(mode="after")
    def _one_verification_key(self) -> Self:
        configured = [
            name
            for name, value in (
                ("GFG_JWT_SECRET", self.jwt_secret),
                ("GFG_JWT_PUBLIC_KEY_FILE", self.jwt_public_key_file),
                ("GFG_JWT_JWKS_FILE", self.jwt_jwks_file),
            )
            if value is not None
        ]
        if len(configured) != 1:
            raise ValueError(
                "set exactly one of GFG_JWT_SECRET (HS256), GFG_JWT_PUBLIC_KEY_FILE or "
                f"GFG_JWT_JWKS_FILE (EdDSA); set: {', '.join(configured) or 'none'}"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security(self) -> Self:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and self.kafka_sasl_mechanism is None:
            raise ValueError(
                f"GFG_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                "needs GFG_KAFKA_SASL_MECHANISM"
            )
        if not sasl and self.kafka_sasl_mechanism is not None:
            raise ValueError("GFG_KAFKA_SASL_MECHANISM needs a SASL_* security protocol")
        if sasl and (
            self.kafka_sasl_plain_username is None or self.kafka_sasl_plain_password is None
        ):
            raise ValueError("SASL needs GFG_KAFKA_SASL_PLAIN_USERNAME and _PASSWORD")
        return self

    def hs256_secret(self) -> str:
        """The platform secret, for local tools that mint HS256 tokens."""
        if self.jwt_secret is None:
            raise ValueError("GFG_JWT_SECRET is not set (this deployment verifies EdDSA tokens)")
        return self.jwt_secret.get_secret_value()

    def dsn(self, database: str) -> str:
        password = self.pg_password.get_secret_value()
        auth = f"{self.pg_user}:{password}" if password else self.pg_user
        return f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{database}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
