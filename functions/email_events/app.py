"""SES bounce and complaint notifications (through SNS) feed the suppression list.
Logic: `underlay.email.suppression`."""

from __future__ import annotations

from typing import Any

from underlay.email.suppression import record_sns_event


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    from underlay.config.runtime import batch_boundary

    batch_boundary("email_events")
    try:
        return record_sns_event(event)
    except Exception as error:
        from underlay.admin.recorder import record_failure

        record_failure("email_events", error)  # its error group, and Sentry
        raise  # Lambda retries the event, as before
