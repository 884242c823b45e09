"""Domain events on the EventBridge bus.

    from underlay import events
    events.publish("FeatureFlagToggled", {"key": "new-checkout", "enabled": True})

Every `detail` carries `correlation_id` and `traceparent` from the current context. Publishing never fails the
caller: an error is logged and counted (`EventPublishFailed`), and the request goes on.

Inside `with events.batch():` (the HTTP app factory and the job worker wrap each invocation in one) events are
buffered and sent at the end, up to ten per PutEvents call, so a request that emits three events costs one call.
Outside a batch, `publish` sends at once.

The built-in catalogue is SPEC.md's. A built-in source (`underlay.*`) may only publish a catalogued detail-type,
which catches typos in tests; app teams publish their own detail-types under their own source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

CATALOGUE: dict[str, tuple[str, ...]] = {
    "health": (
        "SystemHealthChecked",
        "DatabaseHealthChecked",
        "CacheHealthChecked",
        "ExternalServiceHealthChecked",
        "BackgroundJobHealthChecked",
        "HealthMetricsCollected",
    ),
    "audit": ("AuditLogCreated", "LogsArchived", "ErrorAggregated"),
    "cache": (
        "CacheEntryAdded",
        "CacheInvalidated",
        "CacheWarmed",
        "CacheStatisticsCollected",
        "CacheFallbackActivated",
    ),
    "jobs": (
        "BackgroundJobScheduled",
        "BackgroundJobExecuted",
        "BackgroundJobFailed",
        "BackgroundJobStatusChanged",
        "BackgroundJobCancelled",
        "BackgroundJobPrioritized",
    ),
    "flags": (
        "FeatureFlagCreated",
        "FeatureFlagToggled",
        "FeatureFlagTargetingUpdated",
        "FeatureFlagEvaluated",
        "FeatureFlagAnalyticsCollected",
        "FeatureFlagArchived",
    ),
    "config": (
        "ConfigurationLoaded",
        "ConfigurationValidated",
        "ConfigurationReloaded",
        "ConfigurationEncrypted",
        "ConfigurationUpdated",
    ),
}
_DOMAIN_OF = {detail_type: domain for domain, types in CATALOGUE.items() for detail_type in types}
_MAX_ENTRIES_PER_CALL = 10

_buffer: ContextVar[list[dict[str, Any]] | None] = ContextVar("underlay_event_buffer", default=None)


def source_for(detail_type: str) -> str:
    """`underlay.<domain>` for a catalogued detail-type."""
    domain = _DOMAIN_OF.get(detail_type)
    if domain is None:
        raise ValueError(f"{detail_type!r} is not in the event catalogue; pass source= for your own events")
    return f"underlay.{domain}"


def publish(detail_type: str, detail: Mapping[str, Any], *, source: str | None = None) -> None:
    """Publish one domain event (buffered inside `batch()`). Never raises for a delivery failure."""
    if source is None:
        source = source_for(detail_type)
    elif source.startswith("underlay.") and _DOMAIN_OF.get(detail_type) != source.removeprefix("underlay."):
        raise ValueError(f"{detail_type!r} is not a catalogued event of {source!r}")
    from underlay import context

    ctx = context.current()
    body = {**detail, "correlation_id": ctx.correlation_id, "traceparent": ctx.traceparent}
    entry = {
        "Source": source,
        "DetailType": detail_type,
        "Detail": json.dumps(body, default=_json_default, separators=(",", ":")),
        "Time": datetime.now(UTC),
    }
    pending = _buffer.get()
    if pending is not None:
        pending.append(entry)
    else:
        _send([entry])


@contextmanager
def batch() -> Iterator[None]:
    """Buffer the events published inside the block and send them when it ends (even if it raised)."""
    if _buffer.get() is not None:  # already batching: the outer block sends
        yield
        return
    token = _buffer.set([])
    try:
        yield
    finally:
        pending = _buffer.get() or []
        _buffer.reset(token)
        if pending:
            _send(pending)


def _send(entries: list[dict[str, Any]]) -> None:
    from underlay.observability import get_logger, get_metrics

    failed = 0
    try:
        from underlay.aws import client
        from underlay.settings import get_settings

        try:
            bus = get_settings().event_bus
        except Exception:  # invalid settings: ConfigurationValidated must still reach the bus CDK configured
            import os

            bus = os.environ.get("UNDERLAY_EVENT_BUS")
        if not bus:
            get_logger().debug("no event bus configured; events dropped", extra={"count": len(entries)})
            return
        events_client = client("events")
        for start in range(0, len(entries), _MAX_ENTRIES_PER_CALL):
            chunk = [{**e, "EventBusName": bus} for e in entries[start : start + _MAX_ENTRIES_PER_CALL]]
            try:
                result = events_client.put_events(Entries=chunk)
                failed += int(result.get("FailedEntryCount", 0))
            except Exception as error:  # one chunk failing must not stop the others
                failed += len(chunk)
                get_logger().warning("event publish failed", extra={"error": type(error).__name__})
    except Exception as error:  # settings or client creation failed: still never the caller's problem
        failed = len(entries)
        get_logger().warning("event publish failed", extra={"error": type(error).__name__})
    if failed:
        from aws_lambda_powertools.metrics import MetricUnit

        get_logger().warning("events not delivered", extra={"failed": failed, "total": len(entries)})
        get_metrics().add_metric(name="EventPublishFailed", unit=MetricUnit.Count, value=failed)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)
