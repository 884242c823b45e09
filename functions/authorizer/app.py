"""HTTP API Lambda REQUEST authorizer (payload 2.0, simple responses). Logic: `underlay.auth`."""

from __future__ import annotations

from typing import Any

from underlay.auth import authorize


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    decision = authorize(event)
    rejected = decision["context"].get("auth_error")
    if rejected:
        # Accepted calls are in the API access log; only rejections pay for the logger's import.
        from underlay.observability import get_logger

        get_logger().info("token rejected", extra={"route": event.get("routeKey"), "auth_error": rejected})
    return decision
