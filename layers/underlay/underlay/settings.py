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
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from underlay.admin.settings import AdminSettings
from underlay.auth_settings import AuthSettings
from underlay.breaker_settings import BreakerSettings
from underlay.email.settings import EmailSettings
from underlay.storage.settings import StorageSettings

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
    history_days: int = Field(default=30, ge=1, le=3650)  # snapshots expire by TTL after this
    # The `health.snapshot` job alerts here (SNS) when a component fails this many snapshots in a row.
    alert_topic_arn: str | None = None
    alert_after_failures: int = Field(default=3, ge=1, le=100)


class HttpSettings(BaseModel):
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # Signs list cursors (underlay.pagination). On AWS the key lives in Secrets Manager.
    cursor_secret: SecretStr | None = None
    cursor_secret_arn: str | None = None


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ObservabilitySettings(BaseModel):
    log_level: LogLevel = "INFO"
    # Per component, live: a function name ("flags") sets that function's logger; any other name is a Python
    # logger ("botocore", "urllib3"). Unlisted components use `log_level`.
    log_levels: dict[str, LogLevel] = Field(default_factory=dict)
    tracing_enabled: bool = False
    metrics_namespace: str = "Underlay"
    # The share of requests traced when no upstream traceparent decided it; 5xx responses are always kept.
    trace_sample_rate: float = Field(default=0.1, ge=0, le=1)
    # Sentry: the DSN from Secrets Manager (a plain string or {"dsn": ...}), or directly for local work.
    # Neither set: Sentry is off and `sentry_sdk` is never imported.
    sentry_dsn_secret_arn: str | None = None
    sentry_dsn: SecretStr | None = None
    sentry_traces_sample_rate: float | None = Field(default=None, ge=0, le=1)  # None: trace_sample_rate

    @field_validator("log_levels")
    @classmethod
    def _safe_levels(cls, value: dict[str, LogLevel]) -> dict[str, LogLevel]:
        from underlay import declaration

        ours = {f.name for f in declaration.FUNCTIONS}
        for name, level in value.items():
            if not name.strip():
                raise ValueError("a component needs a name: a function (flags) or a Python logger (botocore)")
            if level == "DEBUG" and name not in ours and name.split(".")[0] != "underlay":
                raise ValueError(
                    f"{name}: DEBUG is for Underlay's functions and loggers only; libraries such as botocore log "
                    "whole requests and responses at DEBUG, secrets included"
                )
        return value


class CacheSettings(BaseModel):
    """The cache client's policy (issue 3). Runtime-tunable: TTLs per data type, stampede and breaker knobs."""

    # Seconds per data type (the first segment of a declared key builder's type, see `underlay.cache.keys`).
    ttl_seconds: dict[str, int] = Field(
        default_factory=lambda: {
            "detail": 3600,
            "list": 600,
            "rankings": 86400,
            "autocomplete": 300,
            "banners": 600,
        }
    )
    default_ttl_seconds: int = Field(default=600, ge=1)
    # Stampede protection: XFetch beta (>1 recomputes earlier), the compute lock, and how long others wait for it.
    xfetch_beta: float = Field(default=1.0, ge=0)
    lock_seconds: float = Field(default=10.0, gt=0)
    lock_wait_seconds: float = Field(default=2.0, ge=0)
    # Circuit breaker: this many consecutive Redis failures open it for the cool-down; then one probe is let through.
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    # delete_by_pattern: SCAN page size and UNLINK batch size.
    scan_count: int = Field(default=1000, ge=10, le=100_000)
    unlink_batch: int = Field(default=500, ge=1, le=10_000)
    # In-process hit/miss counters are flushed to Redis at most this often (piggy-backed, never per call).
    stats_flush_seconds: float = Field(default=10.0, ge=0)
    # CacheEntryAdded is sampled (SPEC: never one per write): this fraction of writes emit one.
    entry_added_sample_rate: float = Field(default=0.001, ge=0, le=1)
    top_keys_sample: int = Field(default=200, ge=0, le=10_000)

    @field_validator("ttl_seconds")
    @classmethod
    def _positive_ttls(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(k for k, v in value.items() if v < 1)
        if bad:
            raise ValueError(f"TTLs must be at least 1 second: {', '.join(bad)}")
        return value


class RateTier(BaseModel):
    """`limit` requests (weighted) per `period_seconds`; `limit=None` is unlimited."""

    limit: int | None = Field(default=60, ge=1)
    period_seconds: int = Field(default=60, ge=1, le=86_400)


def _default_tiers() -> dict[str, RateTier]:
    return {
        "anonymous": RateTier(limit=30),
        "free": RateTier(limit=60),
        "basic": RateTier(limit=120),
        "premium": RateTier(limit=300),
        "pro": RateTier(limit=600),
        "enterprise": RateTier(limit=None),
    }


class RateLimitSettings(BaseModel):
    """Per-caller limits by plan tier and route group (issue 3). A route group is the route's function."""

    enabled: bool = True
    tiers: dict[str, RateTier] = Field(default_factory=_default_tiers)
    # Per route group overrides: {"flags": {"free": {"limit": 600}}}; a group not listed uses `tiers`.
    groups: dict[str, dict[str, RateTier]] = Field(default_factory=dict)
    # What one request of a route costs (route key -> weight); unlisted routes cost 1.
    costs: dict[str, int] = Field(
        default_factory=lambda: {"POST /v1/cache/warm": 10, "DELETE /v1/cache/pattern/{pattern}": 5}
    )
    # Never limited: load-balancer and orchestrator probes.
    exempt_routes: list[str] = Field(default_factory=lambda: ["GET /v1/health/live", "GET /v1/health/ready"])
    fail_mode: Literal["open", "closed"] = "open"
    # A caller known to be over its limit is refused in process, without Redis, for at most this long.
    deny_cache_max_seconds: float = Field(default=1.0, ge=0, le=60)
    violation_log_sample_rate: float = Field(default=0.1, ge=0, le=1)

    @field_validator("costs")
    @classmethod
    def _positive_costs(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(k for k, v in value.items() if v < 1)
        if bad:
            raise ValueError(f"costs must be at least 1: {', '.join(bad)}")
        return value

    def tier(self, group: str, tier: str) -> RateTier:
        """The limit for a tier in a route group; an unknown tier is treated as `free`."""
        overrides = self.groups.get(group, {})
        return overrides.get(tier) or self.tiers.get(tier) or overrides.get("free") or self.tiers["free"]

    @field_validator("tiers")
    @classmethod
    def _has_free(cls, value: dict[str, RateTier]) -> dict[str, RateTier]:
        if "free" not in value:
            raise ValueError("tiers must define 'free' (the tier for callers with no or an unknown tier)")
        return value


class AuditSettings(BaseModel):
    """The audit log (issue 6): retention, signing and limits."""

    retention_days: int = Field(default=365, ge=1, le=36_500)
    # Actions starting with one of these are kept `critical_retention_days` (config, auth, the flag kill switch).
    critical_actions: list[str] = Field(
        default_factory=lambda: ["config.", "auth.", "flags.toggle", "flags.kill"]
    )
    critical_retention_days: int = Field(default=2555, ge=1, le=36_500)
    # The KMS asymmetric (ECC_NIST_P256, SIGN_VERIFY) key that signs digests; set by CDK.
    signing_key_id: str | None = None
    digest_retention_days: int = Field(default=365, ge=1, le=36_500)  # S3 Object Lock, COMPLIANCE mode
    max_write_attempts: int = Field(default=30, ge=1, le=1000)
    export_inline_limit: int = Field(default=10_000, ge=1, le=1_000_000)
    verify_max_entries: int = Field(default=100_000, ge=1)
    presign_seconds: int = Field(default=3600, ge=60, le=604_800)


class JobsSettings(BaseModel):
    """Background jobs (issue 7)."""

    history_days: int = Field(default=14, ge=1, le=3650)  # job records expire by TTL after this
    cancel_poll_seconds: float = Field(
        default=1.0, ge=0
    )  # ctx.cancelled() reads the record at most this often
    result_max_bytes: int = Field(default=4096, ge=256, le=350_000)
    # Delays beyond SQS's 15 minutes use an EventBridge Scheduler one-time schedule, assuming this role (CDK).
    scheduler_role_arn: str | None = None
    scheduler_group: str = "default"
    dead_letter_peek: int = Field(
        default=10, ge=1, le=10
    )  # messages shown per DLQ by GET /v1/jobs/dead-letters
    metrics_sample: int = Field(default=1000, ge=10, le=10_000)  # jobs read for p95 duration


class FlagsSettings(BaseModel):
    """Feature flags (issue 4)."""

    refresh_seconds: float = Field(default=5.0, ge=0, le=3600)  # how often an instance checks the stamp
    analytics_flush_seconds: float = Field(default=10.0, ge=0)
    analytics_days: int = Field(default=90, ge=1, le=3650)
    stale_days: int = Field(default=30, ge=1, le=3650)  # the stale scan's N


class ConfigSettings(BaseModel):
    """Runtime configuration (issue 5): how often a warm instance checks the config table's version stamp."""

    refresh_seconds: float = Field(default=5.0, ge=0, le=3600)
    history_limit: int = Field(default=50, ge=1, le=500)  # history page size cap
    secret_cache_seconds: int = Field(default=300, ge=0, le=86_400)  # Powertools Parameters max_age


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
    cache: CacheSettings = Field(default_factory=CacheSettings)
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    # --- end of cache ---
    # --- flags (issue 4) ---
    flags: FlagsSettings = Field(default_factory=FlagsSettings)
    # --- end of flags ---
    # --- config (issue 5) ---
    config: ConfigSettings = Field(default_factory=ConfigSettings)
    # --- end of config ---
    # --- audit (issue 6) ---
    audit: AuditSettings = Field(default_factory=AuditSettings)
    # --- end of audit ---
    # --- jobs (issue 7) ---
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    # --- end of jobs ---
    # --- admin (issue 8) ---
    storage: StorageSettings = Field(default_factory=StorageSettings)
    breakers: BreakerSettings = Field(default_factory=BreakerSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
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
# The stage config's settings document (layer 2), deployed by CDK as one JSON variable; see `underlay.config`.
STAGE_SETTINGS_ENV = "UNDERLAY_STAGE_SETTINGS"


def env_source(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`UNDERLAY_A__B=v` → `{"a": {"b": v}}`; values that look like JSON lists/objects are parsed."""
    data: dict[str, Any] = {}
    for name, value in (os.environ if environ is None else environ).items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == STAGE_SETTINGS_ENV:
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


_effective: Callable[[], Settings] | None = None


def get_settings() -> Settings:
    """The effective settings: defaults < stage config < runtime settings (config table) < environment.

    Loaded and validated once per process (`underlay.config.runtime`), then swapped atomically when a
    request boundary's `refresh_if_due()` sees a new version. Raises pydantic `ValidationError` (title
    "Settings") naming every bad field when the effective configuration is invalid.
    """
    global _effective
    if _effective is None:  # imported once: an import statement per call would cost more than the read
        from underlay.config.runtime import effective

        _effective = effective
    return _effective()


def reset_settings() -> None:
    """Forget the loaded configuration; the next `get_settings()` loads it again (tests, the local stack)."""
    from underlay.config.runtime import reset

    reset()
