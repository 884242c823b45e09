"""Admin settings (`UNDERLAY_ADMIN__...`), a section of `underlay.settings.Settings`."""

from __future__ import annotations

from pydantic import BaseModel, Field


class AdminSettings(BaseModel):
    """Platform statistics, error groups and the Prometheus metrics (issue 8)."""

    # Per-request RED metrics, job and rate-limit counters in Redis for `GET /v1/metrics`. Off: nothing is
    # written per request and the endpoint answers 404.
    metrics_enabled: bool = True
    # Requests are counted in process and written at most this often per instance (0: on every request).
    metrics_flush_seconds: float = Field(default=1.0, ge=0, le=60)
    # A metrics hash that no request touched for this long expires (Prometheus sees a counter reset).
    metrics_ttl_days: int = Field(default=30, ge=1, le=3650)
    # An error group seen this many times within one clock hour is a spike: ErrorAggregated and the
    # `ErrorSpike` metric (which a CloudWatch alarm watches), once per group per hour.
    error_spike_threshold: int = Field(default=50, ge=1)
    error_max_groups: int = Field(default=1000, ge=10, le=100_000)  # least recently seen are dropped
    error_samples: int = Field(default=5, ge=1, le=50)  # correlation ids kept per group, newest first
    error_retention_hours: int = Field(default=168, ge=25, le=24 * 90)  # a quiet group expires after this
    stats_top_errors: int = Field(default=5, ge=0, le=50)  # error groups in `GET /v1/admin/stats`
    # The whole stats call; late sections say so. Below the admin function's timeout (10 s), so a slow section
    # is its own `{"error": ...}` and not a Lambda timeout (the deadline is also cut to the remaining time).
    stats_timeout_seconds: float = Field(default=5.0, gt=0, le=8)


def admin_settings() -> AdminSettings:
    """The `admin` section of the settings."""
    from underlay.settings import get_settings

    return get_settings().admin
