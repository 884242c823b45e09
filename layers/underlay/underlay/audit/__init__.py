"""The audit log: every sensitive action calls `audit.record(...)`.

    from underlay import audit
    audit.record("cache.invalidate", "cache_tag", "movies", after={"deleted": 42})

Actor, tenant, client IP, user agent and correlation id come from the request context (`underlay.context`);
sensitive fields in `before`/`after` are redacted before anything is stored; each entry gets a ULID and a UTC
timestamp, and is appended to the hash chain (`underlay.audit.chain`) in one DynamoDB transaction.

Recording never fails the action it records: if the entry cannot be written, it is logged whole at ERROR with
the metric `AuditWriteFailed` (alarmed), so it can be replayed. Where no audit table is configured (a function
without the grant, a unit test), the entry is written as a structured `audit` log line instead.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from underlay.audit.chain import AuditChain, canonical_json
from underlay.ids import ulid

Result = Literal["success", "failure", "denied"]

_lock = threading.Lock()
_chain: AuditChain | None = None


def writer() -> AuditChain | None:
    """The process's chain writer, or None when no audit table is configured."""
    global _chain
    if _chain is None:
        from underlay.settings import get_settings

        settings = get_settings()
        table = settings.resource("table", "audit")
        if not table:
            return None
        with _lock:
            if _chain is None:
                _chain = AuditChain(table, max_attempts=settings.audit.max_write_attempts)
    return _chain


def reset_audit() -> None:
    global _chain
    with _lock:
        _chain = None


def _retention_days(action: str) -> int:
    from underlay.settings import get_settings

    cfg = get_settings().audit
    critical = any(action.startswith(prefix) for prefix in cfg.critical_actions)
    return cfg.critical_retention_days if critical else cfg.retention_days


def build_entry(
    action: str,
    entity_type: str,
    entity_id: str,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    actor: str | None = None,
    result: Result = "success",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The entry's fields (before it is linked into the chain), redacted, with id, time and retention."""
    from underlay import context
    from underlay.observability import redact

    ctx = context.current()
    moment = now or datetime.now(UTC)
    ms = int(moment.timestamp() * 1000)
    return {
        "id": ulid(ms),
        "ts": moment.isoformat(timespec="milliseconds"),
        "chain": "main",
        "actor": actor or ctx.sub or "anonymous",
        "tenant": ctx.tenant,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "entity": f"{entity_type}#{entity_id}",
        "result": result,
        "before": canonical_json(redact(dict(before))) if before is not None else "",
        "after": canonical_json(redact(dict(after))) if after is not None else "",
        "source_ip": ctx.source_ip,
        "user_agent": ctx.user_agent[:512],
        "correlation_id": ctx.correlation_id,
        "expires_at": int((moment + timedelta(days=_retention_days(action))).timestamp()),
    }


def record(
    action: str,
    entity_type: str,
    entity_id: str,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    actor: str | None = None,
    result: Result = "success",
) -> dict[str, Any]:
    """Record one audited action and return the entry as stored (with `seq` and `hash` when chained)."""
    from underlay.observability import get_logger

    entry = build_entry(
        action, entity_type, entity_id, before=before, after=after, actor=actor, result=result
    )
    try:
        chain_writer = writer()
        if chain_writer is None:
            get_logger().info("audit", extra={"audit": entry})
            return entry
        stored = chain_writer.append(entry)
    except Exception as error:  # never fail the action; make the loss loud and replayable instead
        _write_failed(entry, error)
        return entry
    from underlay import events

    events.publish(
        "AuditLogCreated",
        {k: stored[k] for k in ("id", "seq", "action", "entity_type", "entity_id", "actor", "result")},
    )
    return stored


def _write_failed(entry: dict[str, Any], error: BaseException) -> None:
    from underlay.observability import get_logger, get_metrics

    try:
        from aws_lambda_powertools.metrics import MetricUnit

        get_logger().error("audit entry not written", extra={"audit": entry, "error": type(error).__name__})
        get_metrics().add_metric(name="AuditWriteFailed", unit=MetricUnit.Count, value=1)
    except Exception:  # noqa: S110 (the logger itself failing must still not fail the caller)
        pass


def entry_view(fields: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API shows it: `before`/`after` parsed back to objects, storage keys dropped."""
    import json

    view = {k: v for k, v in fields.items() if k not in ("pk", "sk", "chain", "entity")}
    for name in ("before", "after"):
        raw = view.get(name)
        view[name] = json.loads(raw) if raw else None
    return view
