"""Logger, metrics and tracer, each created once, lazily, in this one module.

- `get_logger()`: Powertools Logger writing single-line JSON with `service`, `stage`, `correlation_id` and
  `cold_start`, with secrets redacted by key (authorization, token, password, secret, api_key) and bearer
  tokens redacted inside any string.
- `get_metrics()`: Powertools Metrics (CloudWatch EMF), one namespace from settings.
- `get_tracer()`: Powertools Tracer, created only when tracing is enabled (its import costs ~250 ms).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics, Tracer

REDACTED = "[REDACTED]"
_SENSITIVE_KEY = re.compile(r"authorization|token|password|passwd|secret|api[_-]?key|cookie", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
MAX_STACK_CHARS = 1000


def redact(value: Any, _depth: int = 0) -> Any:
    """Return a copy of `value` with sensitive keys and bearer tokens masked."""
    if _depth > 12:
        return value
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SENSITIVE_KEY.search(k) else redact(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        return _JWT.sub(REDACTED, _BEARER.sub(f"Bearer {REDACTED}", value))
    return value


def _serialize(log: dict[str, Any]) -> str:
    exc = log.get("exception")
    if isinstance(exc, str) and len(exc) > MAX_STACK_CHARS:
        log["exception"] = exc[:MAX_STACK_CHARS] + "…"
    return json.dumps(redact(log), default=str, separators=(",", ":"))


def _identity() -> tuple[str, str, str]:
    """service, stage and log level; from env defaults when the settings themselves are invalid, so the
    error that says which fields are bad can still be logged."""
    from underlay.settings import detect_stage, get_settings

    try:
        settings = get_settings()
    except Exception:
        return "underlay", detect_stage(), "INFO"
    return settings.service, settings.stage, settings.observability.log_level


@lru_cache(maxsize=1)
def get_logger() -> Logger:
    from aws_lambda_powertools import Logger

    service, stage, level = _identity()
    return Logger(service=service, level=level, json_serializer=_serialize, stage=stage)


@lru_cache(maxsize=1)
def get_metrics() -> Metrics:
    from aws_lambda_powertools import Metrics
    from underlay.settings import get_settings

    try:
        namespace = get_settings().observability.metrics_namespace
    except Exception:
        namespace = "Underlay"
    service, stage, _ = _identity()
    metrics = Metrics(namespace=namespace, service=service)
    metrics.set_default_dimensions(stage=stage)
    return metrics


@lru_cache(maxsize=1)
def get_tracer() -> Tracer | None:
    from underlay.settings import get_settings

    try:
        if not get_settings().observability.tracing_enabled:
            return None
    except Exception:
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=get_settings().service)


def reset_observability() -> None:
    """Drop the cached logger/metrics/tracer (tests, or a log level changed at runtime)."""
    get_logger.cache_clear()
    get_metrics.cache_clear()
    get_tracer.cache_clear()
