"""The audit seam: every sensitive action calls `audit.record(...)` here.

    from underlay import audit
    audit.record("cache.invalidate", "cache_tag", "movies", after={"deleted": 42})

This is the signature the audit log (issue 6) keeps. Until its hash-chained DynamoDB writer lands, `record`
writes one structured `audit` log line per action (actor, IP, user agent and correlation id from the request
context; sensitive fields redacted) so nothing done today goes unrecorded, and callers never change when the
writer arrives. Recording never fails the action that caused it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

Result = Literal["success", "failure", "denied"]


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
    """Record one audited action and return the entry as recorded."""
    from underlay import context
    from underlay.observability import get_logger, redact

    ctx = context.current()
    entry = {
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "actor": actor or ctx.sub or "anonymous",
        "result": result,
        "before": redact(dict(before)) if before is not None else None,
        "after": redact(dict(after)) if after is not None else None,
        "source_ip": ctx.source_ip,
        "user_agent": ctx.user_agent,
        "correlation_id": ctx.correlation_id,
    }
    with contextlib.suppress(Exception):  # an audit line must never fail the action it records
        get_logger().info("audit", extra={"audit": entry})
    return entry
