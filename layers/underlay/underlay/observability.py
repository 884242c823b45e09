"""Logger, metrics and tracer, each created once, lazily, in this one module.

- `get_logger()`: Powertools Logger writing single-line JSON with `service`, `stage`, `cold_start` and, per request
  (set by `underlay.http`), `correlation_id`, `trace_id`, `method`, `path` and `user`, with secrets redacted by key (authorization, token, password, secret, api_key, cookie), and
  bearer tokens, JWTs and `password=...`-style assignments redacted inside any string.
- `get_metrics()`: Powertools Metrics (CloudWatch EMF), one namespace from settings, flushed per invocation;
  `emit_metric()` for one metric written at once, with its own dimensions. The metrics are listed in the README.
- `get_tracer()`: Powertools Tracer, created only when tracing is enabled (its import costs ~250 ms).
- `sample_trace()` / `traced()`: the per-request sampling decision (see "Trace sampling" below).

Metric dimensions. Every metric of the layer carries exactly `stage` plus the dimensions its emitter names
(`function`, `dependency`, `tier` and `route`), nothing else: CloudWatch identifies a metric by its whole dimension
set, and the alarms and the dashboard (`infra/constructs/monitoring.py`) watch that set. In particular no `service`:
Powertools would add it from `POWERTOOLS_SERVICE_NAME`, which CDK sets to each function's name, and the metric would
go out under a dimension set no alarm watches (tests/infra/test_monitoring.py checks the EMF against the alarms).

Trace sampling. A request carrying a valid W3C `traceparent` keeps its caller's decision (the `sampled` flag,
bit 0 of trace-flags). Without one, `observability.trace_sample_rate` (default 0.1) of requests are sampled. The
decision goes out in the response's and the propagated `traceparent` (flag 01 or 00). A 5xx response is always
kept: its outgoing flag is forced to 01, and when the request was not sampled its error is still written to X-Ray
as a subsegment of its own. What X-Ray can receive at all is decided first by X-Ray's sampling rules on the Lambda
invocation (`_X_AMZN_TRACE_ID` `Sampled=`): give the functions a rule at 100% for this decision to be the one that
applies. An unsampled request runs under an unsampled subsegment, so the AWS SDK calls beneath it are not recorded.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics, Tracer

REDACTED = "[REDACTED]"
_SENSITIVE_KEY = re.compile(r"authorization|token|password|passwd|secret|api[_-]?key|cookie", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# `password=...`, `token: ...`, `?api_key=...` inside free text (messages, URLs, exception strings).
_ASSIGNED = re.compile(
    r"""(?i)\b((?:[a-z0-9]+[_-])*(?:password|passwd|secret|token|api[_-]?key))(["']?\s*[:=]\s*["']?)"""
    r"""(?!\[REDACTED\])([^\s&,;'"]+)"""
)
MAX_STACK_CHARS = 1000


def redact(value: Any, _depth: int = 0) -> Any:
    """Return a copy of `value` with sensitive keys and bearer tokens masked (containers deeper than 24 levels
    are replaced whole, so nothing unscrubbed slips through)."""
    if _depth > 24:
        return REDACTED if isinstance(value, dict | list | tuple | str) else value
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SENSITIVE_KEY.search(k) else redact(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        masked = _JWT.sub(REDACTED, _BEARER.sub(f"Bearer {REDACTED}", value))
        return _ASSIGNED.sub(rf"\1\2{REDACTED}", masked)
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
    _, stage, _ = _identity()
    # service="": no `service` dimension, whatever POWERTOOLS_SERVICE_NAME says (see "Metric dimensions").
    metrics = Metrics(namespace=namespace, service="")
    metrics.set_default_dimensions(stage=stage)
    return metrics


def emit_metric(name: str, value: float = 1, unit: str = "Count", **dimensions: str) -> None:
    """One metric written now as its own EMF line, in the namespace of `get_metrics()`, with the dimensions
    `stage` plus `dimensions` (`function="admin"`) and no others. Keep dimension values bounded.

    The one way the layer emits a metric outside the per-invocation flush: the alarms watch these."""
    from aws_lambda_powertools.metrics import EphemeralMetrics
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    if is_metrics_disabled():
        return
    shared = get_metrics()
    metrics = EphemeralMetrics(namespace=shared.namespace, service="")
    for key, dim in {**shared.default_dimensions, **dimensions}.items():
        metrics.add_dimension(name=key, value=str(dim))
    metrics.add_metric(name=name, unit=unit, value=value)
    metrics.flush_metrics()


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
    """Drop the cached logger/metrics/tracer, and the Sentry client and external-service breakers if they were
    loaded (tests, or a log level changed at runtime)."""
    import sys

    get_logger.cache_clear()
    get_metrics.cache_clear()
    get_tracer.cache_clear()
    if "underlay.sentry" in sys.modules:
        sys.modules["underlay.sentry"].reset_sentry()
    if "underlay.breaker" in sys.modules:
        sys.modules["underlay.breaker"].reset_breakers()


# --- trace sampling -----------------------------------------------------------------------------


class TraceSampling(NamedTuple):
    sampled: bool
    reason: Literal["parent", "rate"]  # the caller's traceparent decided, or our sample rate did


def sample_trace(
    traceparent: str | None, rate: float | None = None, *, draw: Callable[[], float] = random.random
) -> TraceSampling:
    """Decide whether to trace a request. `traceparent` is the caller's, already validated, or None; `rate`
    defaults to `observability.trace_sample_rate` (0.1 when the settings themselves are invalid)."""
    if traceparent:
        return TraceSampling(bool(int(traceparent[-2:], 16) & 0x01), "parent")
    if rate is None:
        from underlay.settings import get_settings

        try:
            rate = get_settings().observability.trace_sample_rate
        except Exception:
            rate = 0.1
    return TraceSampling(draw() < rate, "rate")


def with_sampled_flag(traceparent: str, sampled: bool) -> str:
    """`traceparent` with its `sampled` trace-flag set or cleared (the other flag bits kept)."""
    flags = int(traceparent[-2:], 16)
    flags = flags | 0x01 if sampled else flags & ~0x01
    return f"{traceparent[:-2]}{flags:02x}"


def keep_trace(sampling: TraceSampling, status: int) -> bool:
    """Errors are always kept: a 5xx response is traced whatever the sampling decision was."""
    return sampling.sampled or status >= 500


def traced(
    tracer: Tracer,
    name: str,
    sampling: TraceSampling,
    run: Callable[[], dict[str, Any]],
    error: Callable[[], BaseException | None] = lambda: None,
) -> dict[str, Any]:
    """Run a request (`run` returns the API Gateway response) under an X-Ray subsegment honouring `sampling`.

    Sampled: a recorded subsegment annotated `sampled_by` (parent or rate) and `status`. Not sampled: an unsampled
    subsegment (nothing under it is recorded); if the response is a 5xx, a recorded `<name> error` subsegment
    with `sampled_by=error`, the status and the exception follows, so every error reaches X-Ray.
    """
    provider: Any = tracer.provider
    if sampling.sampled:
        with provider.in_subsegment(name) as subsegment:
            response = run()
            subsegment.put_annotation("sampled_by", sampling.reason)
            subsegment.put_annotation("status", int(response.get("statusCode", 500)))
        return response
    begin = getattr(provider, "begin_subsegment_without_sampling", None)
    unsampled = begin(name) if begin is not None else None
    try:
        response = run()
    finally:
        if unsampled is not None:
            provider.end_subsegment()
    status = int(response.get("statusCode", 500))
    if keep_trace(sampling, status):
        import traceback

        with provider.in_subsegment(f"{name} error") as subsegment:
            subsegment.put_annotation("sampled_by", "error")
            subsegment.put_annotation("status", status)
            exc = error()
            if exc is not None:
                subsegment.add_exception(exc, traceback.extract_tb(exc.__traceback__))
    return response
