"""Event-bus subscriptions: one SQS queue per subscription (partial batch responses).
Logic: `underlay.subscriptions`."""

from __future__ import annotations

from typing import Any

from underlay.subscriptions import dispatch


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dispatch(event, context)
