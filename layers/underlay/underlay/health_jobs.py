"""`health.snapshot`, every 5 minutes: run every health check, keep the result in the health history table (what
`GET /v1/health/history` pages through), emit SystemHealthChecked, and alert through SNS when a component has
failed `health.alert_after_failures` snapshots in a row (once per streak, not on every snapshot after)."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel
from underlay.job_types import JobContext, job_type


class SnapshotPayload(BaseModel):
    pass


def _failing(snapshot_checks: dict[str, str]) -> set[str]:
    return {name for name, status in snapshot_checks.items() if status == "fail"}


@job_type("health.snapshot", SnapshotPayload, max_attempts=1, timeout_s=60)
def snapshot(payload: SnapshotPayload, ctx: JobContext) -> dict[str, Any]:
    """Snapshot the health of every component, and alert on components failing repeatedly."""
    from underlay import events, health
    from underlay.aws import client
    from underlay.errors import ConfigInvalidError
    from underlay.ids import ulid
    from underlay.settings import get_settings

    settings = get_settings()
    table = settings.resource("table", "health_history")
    if not table:
        raise ConfigInvalidError("The health history table is not configured for this function.")
    health.clear_cache()
    report = health.run_checks()
    checks: dict[str, str] = {}
    for check, critical in report.checks:
        name = check.component
        effective = "warn" if check.status == "fail" and not critical else check.status
        if check.status == "fail" or checks.get(name) not in ("fail", "warn"):
            checks[name] = "fail" if check.status == "fail" else effective
    ddb = client("dynamodb")
    threshold = settings.health.alert_after_failures
    previous = ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "snapshot"}},
        ScanIndexForward=False,
        Limit=threshold,
        ProjectionExpression="checks",
    ).get("Items", [])
    history = [json.loads(item["checks"]["S"]) for item in previous]  # newest first
    failing_now = _failing(checks)
    # Alert on the snapshot that completes a streak of `threshold`: failing now and in the last threshold-1,
    # but not in the one before those (so a long outage alerts once).
    streak = [failing_now, *(_failing(h) for h in history)]
    alert = set(failing_now)
    for older in streak[1:threshold]:
        alert &= older
    if len(streak) < threshold:
        alert = set()
    if len(streak) > threshold:
        alert -= streak[threshold]
    ddb.put_item(
        TableName=table,
        Item={
            "pk": {"S": "snapshot"},
            "sk": {"S": ulid()},  # time-ordered and unique, however often snapshots are taken
            "time": {"S": report.time},
            "status": {"S": report.status},
            "checks": {"S": json.dumps(checks, sort_keys=True)},
            "expires_at": {"N": str(int(time.time()) + settings.health.history_days * 86400)},
        },
    )
    if alert and settings.health.alert_topic_arn:
        client("sns").publish(
            TopicArn=settings.health.alert_topic_arn,
            Subject=f"Underlay {settings.stage}: {len(alert)} component(s) failing",
            Message=json.dumps({"failing": sorted(alert), "snapshots": threshold, "status": report.status}),
        )
    events.publish("SystemHealthChecked", {"status": report.status, "failing": sorted(failing_now)})
    return {"status": report.status, "failing": sorted(failing_now), "alerted": sorted(alert)}
