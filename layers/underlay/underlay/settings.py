"""Typed settings for every function: pydantic models, `UNDERLAY_` env prefix, validated once, lazily.

Nothing reads settings at import time. `get_settings()` builds them on first use and caches them;
`reset_settings()` drops the cache (tests, and hot reload later).

Nested values use `__`: `UNDERLAY_AUTH__AUDIENCE=underlay`, `UNDERLAY_TABLES__FLAGS=underlay-dev-flags`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Stage = Literal["dev", "staging", "prod"]


class AuthSettings(BaseModel):
    issuer: str = "https://issuer.underlay.local"
    audience: str = "underlay"
    jwks_url: str = "http://127.0.0.1:3000/.well-known/jwks.json"
    algorithms: list[Literal["RS256", "ES256"]] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    tier_claim: str = "tier"
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    jwks_cache_seconds: int = Field(default=300, ge=0)
    jwks_refresh_interval_seconds: int = Field(default=60, ge=1)  # at most one refresh per minute on unknown kid
    jwks_timeout_seconds: float = Field(default=2.0, gt=0)


class RedisSettings(BaseModel):
    url: SecretStr | None = None  # local work and tests: redis://host:port/0 (may carry a password)
    host: str | None = None  # on AWS: the ElastiCache endpoint
    port: int = 6379
    tls: bool = False
    auth_secret_arn: str | None = None  # Secrets Manager secret holding the auth token
    prefix: str = "underlay:"
    socket_timeout_seconds: float = Field(default=0.25, gt=0)
    connect_timeout_seconds: float = Field(default=0.5, gt=0)

    @property
    def configured(self) -> bool:
        return self.url is not None or self.host is not None


class ExternalService(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    url: str = Field(pattern=r"^https?://")
    critical: bool = False


class HealthSettings(BaseModel):
    check_timeout_seconds: float = Field(default=2.0, gt=0, le=5)
    cache_seconds: float = Field(default=5.0, ge=0)
    # Components whose failure fails readiness; the others only warn (degraded).
    critical: list[Literal["dynamodb", "s3", "redis", "sqs"]] = Field(default_factory=lambda: ["dynamodb"])
    dlq_warn_threshold: int = Field(default=1000, ge=0)
    queue_warn_threshold: int = Field(default=1000, ge=0)
    latency_warn_ms: float = Field(default=250.0, gt=0)
    external_services: list[ExternalService] = Field(default_factory=list)
    history_limit: int = Field(default=50, ge=1, le=500)


class HttpSettings(BaseModel):
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, ge=1)


class ObservabilitySettings(BaseModel):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tracing_enabled: bool = False
    metrics_namespace: str = "Underlay"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UNDERLAY_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
    )

    stage: Stage = "dev"
    service: str = "underlay"
    version: str = "0.1.0"
    release_id: str = "local"
    auth: AuthSettings = Field(default_factory=AuthSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    # Physical names of declared resources, set by CDK (see `declaration.env_name`) or the local stack.
    tables: dict[str, str] = Field(default_factory=dict)
    buckets: dict[str, str] = Field(default_factory=dict)
    queues: dict[str, str] = Field(default_factory=dict)  # queue name -> URL (DLQs as `<name>_dlq`)
    event_bus: str | None = None

    @field_validator("tables", "buckets", "queues", mode="after")
    @classmethod
    def _normalise_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.lower().replace("-", "_"): v for k, v in value.items()}

    def resource(self, kind: Literal["table", "bucket", "queue"], name: str) -> str | None:
        """The physical name (or queue URL) of a declared resource, if this function was given it."""
        mapping = {"table": self.tables, "bucket": self.buckets, "queue": self.queues}[kind]
        return mapping.get(name.lower().replace("-", "_"))


def detect_stage() -> Stage:
    """The stage from `UNDERLAY_STAGE`, defaulting to dev (a laptop, CI)."""
    value = os.environ.get("UNDERLAY_STAGE", "dev").lower()
    return value if value in ("dev", "staging", "prod") else "dev"  # type: ignore[return-value]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    get_settings.cache_clear()
