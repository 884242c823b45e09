"""SQS job worker (one event source per priority queue). Logic: `underlay.jobs.worker`."""

from __future__ import annotations

from typing import Any

from underlay.jobs.worker import handle


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
