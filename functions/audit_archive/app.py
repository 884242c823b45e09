"""DynamoDB stream consumer: archives audit entries that TTL removes. Logic: `underlay.audit.archive`."""

from __future__ import annotations

from typing import Any

from underlay.audit.archive import archive_stream


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from underlay.config.runtime import batch_boundary
    from underlay.observability import get_logger

    batch_boundary("audit_archive")
    try:
        result = archive_stream(event)
    except Exception as error:
        from underlay.admin.recorder import record_failure

        record_failure("audit_archive", error)  # its error group, and Sentry
        raise  # Lambda retries the batch, as before
    get_logger().info(
        "audit entries archived", extra={"archived": result["archived"], "keys": result["keys"]}
    )
    return result
