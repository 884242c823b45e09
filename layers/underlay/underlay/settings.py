"""Typed settings for every function: pydantic models, `UNDERLAY_` env prefix, validated once, lazily.

The env source is a few lines here rather than pydantic-settings, whose import (asyncio, importlib.metadata)
costs more cold start than everything else this module does.

Nothing reads settings at import time. `get_settings()` builds them on first use and caches them;
`reset_settings()` drops the cache (tests, and hot reload later).

Nested values use `__`: `UNDERLAY_AUTH__AUDIENCE=underlay`, `UNDERLAY_TABLES__FLAGS=underlay-dev-flags`.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from underlay.auth_settings import AuthSettings

Stage = Literal["dev", "staging", "prod"]
Component = Literal["dynamodb", "s3", "redis", "sqs", "http"]


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
    critical: list[Component] = Field(default_factory=lambda: list[Component](["dynamodb"]))
    dlq_warn_threshold: int = Field(default=1000, ge=0)
    queue_warn_threshold: int = Field(default=1000, ge=0)
    latency_warn_ms: float = Field(default=1000.0, gt=0)
    external_services: list[ExternalService] = Field(default_factory=list)
    history_limit: int = Field(default=50, ge=1, le=500)


class HttpSettings(BaseModel):
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # Signs list cursors (underlay.pagination). On AWS the key lives in Secrets Manager.
    cursor_secret: SecretStr | None = None
    cursor_secret_arn: str | None = None


class ObservabilitySettings(BaseModel):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tracing_enabled: bool = False
    metrics_namespace: str = "Underlay"


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    stage: Stage = "dev"
    service: str = "underlay"
    version: str = "0.1.0"
    release_id: str = "local"
    auth: AuthSettings = Field(default_factory=AuthSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    # --- cache (issue 3) ---
    # --- end of cache ---
    # --- flags (issue 4) ---
    # --- end of flags ---
    # --- config (issue 5) ---
    # --- end of config ---
    # --- audit (issue 6) ---
    # --- end of audit ---
    # --- jobs (issue 7) ---
    # --- end of jobs ---
    # --- admin (issue 8) ---
    # --- end of admin ---
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


ENV_PREFIX = "UNDERLAY_"


def env_source(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """`UNDERLAY_A__B=v` → `{"a": {"b": v}}`; values that look like JSON lists/objects are parsed."""
    data: dict[str, Any] = {}
    for name, value in (os.environ if environ is None else environ).items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            parsed: Any = value
            if value[:1] in "[{":
                try:
                    parsed = json.loads(value)
                except ValueError:
                    parsed = value  # let validation name the field
            node[path[-1]] = parsed
    return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The effective settings, validated once. Raises pydantic `ValidationError` naming every bad field."""
    return Settings.model_validate(env_source())


def reset_settings() -> None:
    get_settings.cache_clear()
