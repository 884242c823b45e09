"""Reading jobs: the filtered list (a Query on a GSI, newest first, signed cursor), dead letters and their
redrive, and the queue and job metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from underlay.errors import FieldError, ValidationFailedError
from underlay.ids import id_range, ulid_bound
from underlay.items import equals_filter
from underlay.jobs import PRIORITIES, queue_name, store


class Filters(NamedTuple):
    status: str | None = None
    type: str | None = None
    priority: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def scope(self) -> str:
        from underlay.pagination import scope_of

        return scope_of("jobs", self)


def _ddb() -> Any:
    from underlay.aws import client

    return client("dynamodb")


def list_jobs(
    filters: Filters, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of jobs, newest first: status, else type, else all picks the index; priority narrows it."""
    from datetime import UTC

    from underlay import pagination

    # A date without a zone is UTC (comparing naive with aware dates would raise).
    filters = filters._replace(
        start=filters.start.replace(tzinfo=UTC)
        if filters.start and filters.start.tzinfo is None
        else filters.start,
        end=filters.end.replace(tzinfo=UTC) if filters.end and filters.end.tzinfo is None else filters.end,
    )
    if filters.start and filters.end and filters.start > filters.end:
        raise ValidationFailedError(
            "from is after to.", errors=[FieldError("from", "must not be after 'to'")]
        )
    scope = filters.scope()
    if filters.status:
        index, attribute, value = "by_status", "status", filters.status
    elif filters.type:
        index, attribute, value = "by_type", "type", filters.type
    else:
        index, attribute, value = "by_time", "kind", "job"
    names, values = {"#p": attribute}, {":p": {"S": value}}
    condition = "#p = :p"
    if filters.start or filters.end:
        names["#id"] = "id"
        low, high = id_range(filters.start, filters.end)
        values[":lo"], values[":hi"] = {"S": low}, {"S": high}
        condition += " AND #id BETWEEN :lo AND :hi"
    request: dict[str, Any] = {
        "TableName": store.table(),
        "IndexName": index,
        "KeyConditionExpression": condition,
        "ScanIndexForward": False,
        "Limit": limit,
    }
    narrow = {
        k: v for k, v in (("type", filters.type), ("priority", filters.priority)) if v and k != attribute
    }
    narrowing = equals_filter(narrow, names, values)
    if narrowing:
        request["FilterExpression"] = narrowing
    request["ExpressionAttributeNames"], request["ExpressionAttributeValues"] = names, values
    if cursor:
        request["ExclusiveStartKey"] = pagination.decode(cursor, scope)
    page = _ddb().query(**request)
    return [store.view(item) for item in page.get("Items", [])], pagination.encode(
        page.get("LastEvaluatedKey"), scope
    )


def _dlq_url(priority: str) -> str:
    from underlay.errors import ConfigInvalidError
    from underlay.settings import get_settings

    url = get_settings().resource("queue", f"{queue_name(priority)}-dlq")
    if not url:
        raise ConfigInvalidError(f"The {queue_name(priority)} dead-letter queue is not configured.")
    return url


def dead_letters() -> list[dict[str, Any]]:
    """A peek at each DLQ (messages stay there: visibility 0) with the job each message names."""
    from underlay.aws import client
    from underlay.settings import get_settings

    peek = get_settings().jobs.dead_letter_peek
    found = []
    for priority in PRIORITIES:
        url = _dlq_url(priority)
        sqs = client("sqs")
        depth = int(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
                "Attributes"
            ]["ApproximateNumberOfMessages"]
        )
        messages = (
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=peek, VisibilityTimeout=0).get(
                "Messages", []
            )
            if depth
            else []
        )
        entries = []
        for message in messages:
            try:
                body = json.loads(message["Body"])
            except ValueError:
                body = {"raw": message["Body"][:512]}
            entries.append(
                {
                    "message_id": message["MessageId"],
                    "job_id": body.get("id"),
                    "type": body.get("type"),
                    "error": body.get("error"),
                }
            )
        found.append({"queue": queue_name(priority), "depth": depth, "messages": entries})
    return found


def redrive(priority: str | None = None, limit: int = 100) -> dict[str, Any]:
    """Move dead letters back to their queue: each job is reset to pending with fresh attempts, then re-sent."""
    from underlay import audit
    from underlay.aws import client
    from underlay.jobs import queue_url

    sqs = client("sqs")
    moved: list[str] = []
    skipped: list[str] = []
    for prio in [priority] if priority else list(PRIORITIES):
        url = _dlq_url(prio)
        while len(moved) < limit:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=min(10, limit - len(moved)), VisibilityTimeout=30
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                outcome = _redrive_one(sqs, message, queue_url(prio))
                if outcome == "skipped":
                    skipped.append(message["MessageId"])
                    continue  # unreadable: left in the DLQ for a person to look at
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                if outcome != "stale":
                    moved.append(outcome)
    audit.record(
        "jobs.redrive",
        "dead_letters",
        priority or "all",
        after={"moved": len(moved), "skipped": len(skipped)},
    )
    result: dict[str, Any] = {"redriven": len(moved), "jobs": moved}
    if skipped:
        result["skipped"] = skipped
    return result


def _redrive_one(sqs: Any, message: dict[str, Any], queue: str) -> str:
    """Replay one dead letter: the job id (or message id) when re-sent, "stale" when its job has moved on
    (running again, or gone), "skipped" when the message cannot be read."""
    try:
        body = json.loads(message["Body"])
    except ValueError:
        return "skipped"
    if not isinstance(body, dict):
        return "skipped"
    job_id = body.get("id")
    if not job_id:  # a message SQS moved itself (a scheduled firing, say): replay it as it was
        original = {k: v for k, v in body.items() if k != "error"}
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(original))
        return str(message["MessageId"])
    reset = store.transition(
        job_id,
        "pending",
        expect=("failed", "pending"),  # never one that runs again (a retry got there first)
        sets={"attempts": 0, "error": None, "finished_at": None},
        removes=("cancel_requested", "lease_until"),
        note={"redriven": True},
    )
    if reset is None:
        return "stale"
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"id": job_id, "type": body.get("type")}))
    return str(job_id)


def metrics() -> dict[str, Any]:
    """Depth and in-flight per queue (and DLQ depth); jobs failed in 24 h, success rate and p95 duration."""
    from underlay.aws import client
    from underlay.jobs import queue_url
    from underlay.settings import get_settings

    sqs = client("sqs")
    queues = {}
    for priority in PRIORITIES:
        attrs = sqs.get_queue_attributes(
            QueueUrl=queue_url(priority),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        dlq = sqs.get_queue_attributes(
            QueueUrl=_dlq_url(priority), AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        queues[queue_name(priority)] = {
            "depth": int(attrs["ApproximateNumberOfMessages"]),
            "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
            "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
            "dead_letters": int(dlq["ApproximateNumberOfMessages"]),
        }
    since = datetime.now(UTC) - timedelta(hours=24)
    low = ulid_bound(int(since.timestamp() * 1000), upper=False)
    sample = get_settings().jobs.metrics_sample

    def recent(status: str, *, count: bool) -> Any:
        request: dict[str, Any] = {
            "TableName": store.table(),
            "IndexName": "by_status",
            "KeyConditionExpression": "#s = :s AND #id >= :lo",
            "ExpressionAttributeNames": {"#s": "status", "#id": "id"},
            "ExpressionAttributeValues": {":s": {"S": status}, ":lo": {"S": low}},
        }
        if count:
            return int(_ddb().query(**request, Select="COUNT")["Count"])
        return _ddb().query(**request, Limit=sample, ScanIndexForward=False).get("Items", [])

    failed, succeeded = recent("failed", count=True), recent("succeeded", count=False)
    durations = sorted(int(i["duration_ms"]["N"]) for i in succeeded if "duration_ms" in i)
    p95 = durations[min(len(durations) - 1, int(0.95 * len(durations)))] if durations else None
    finished = failed + len(succeeded)
    return {
        "queues": queues,
        "last_24h": {
            "succeeded": len(succeeded),
            "failed": failed,
            "success_rate": round(len(succeeded) / finished, 4) if finished else None,
            "p95_duration_ms": p95,
        },
    }
