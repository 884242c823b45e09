"""Background jobs: enqueue typed jobs now or later with a priority; cancel, retry, delete; the worker runs them.

    from underlay import jobs
    job_id = jobs.enqueue("cache.warm", {"warmers": ["home-banners"]}, priority="high")

Job types are registered in code (`underlay.job_types.job_type`). A job is a record in the jobs table (its status
and history, `underlay.jobs.store`) plus a message `{"id", "type"}` on the priority's SQS queue. A delay up to
15 minutes is SQS's `DelaySeconds`; a later `run_at` is an EventBridge Scheduler one-time schedule that puts the
same message on the queue when it is due. The worker is `underlay.jobs.worker`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from underlay.aws import error_code
from underlay.errors import ConflictError, FieldError, ValidationFailedError
from underlay.jobs.store import FINISHED, Priority, Status

__all__ = ["Priority", "Status", "cancel", "delete", "enqueue", "get", "retry"]
SQS_MAX_DELAY_S = 900
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")


def queue_name(priority: str) -> str:
    return f"jobs-{priority}"


def queue_url(priority: str) -> str:
    from underlay.errors import ConfigInvalidError
    from underlay.settings import get_settings

    url = get_settings().resource("queue", queue_name(priority))
    if not url:
        raise ConfigInvalidError(f"The {queue_name(priority)} queue is not configured for this function.")
    return url


def queue_arn(url: str) -> str:
    """`https://sqs.<region>.amazonaws.com/<account>/<name>` (or moto's) → the queue ARN."""
    import os
    from urllib.parse import urlparse

    parsed = urlparse(url)
    account, name = parsed.path.strip("/").split("/")[-2:]
    host = parsed.hostname or ""
    region = host.split(".")[1] if host.startswith("sqs.") else os.environ.get("AWS_REGION", "us-east-1")
    return f"arn:aws:sqs:{region}:{account}:{name}"


def _validate(job_type: str, payload: Any) -> tuple[Any, dict[str, Any]]:
    from pydantic import ValidationError
    from underlay import job_types
    from underlay.errors import field_errors_from_pydantic

    try:
        spec = job_types.get(job_type)
    except KeyError:
        raise ValidationFailedError(
            f"Unknown job type {job_type!r}.",
            errors=[FieldError("type", f"one of {sorted(job_types.all_types())}")],
        ) from None
    try:
        model = spec.payload_model.model_validate(payload if payload is not None else {})
    except ValidationError as error:
        errors = [
            FieldError(f"payload.{e.field}" if e.field != "body" else "payload", e.message)
            for e in field_errors_from_pydantic(error.errors())
        ]
        raise ValidationFailedError("The payload is not valid for this job type.", errors=errors) from error
    return spec, model.model_dump(mode="json")


def enqueue(
    job_type: str,
    payload: Any = None,
    *,
    priority: Priority = "normal",
    delay_seconds: int | None = None,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    source: str = "api",
    schedule: str | None = None,
    overlap: str | None = None,
) -> str:
    """Validate, record (pending) and queue a job; return its id. The same idempotency key returns the same job."""
    from underlay import events
    from underlay.ids import ulid
    from underlay.jobs import store
    from underlay.settings import get_settings

    spec, clean = _validate(job_type, payload)
    if priority not in PRIORITIES:
        raise ValidationFailedError(
            "Unknown priority.", errors=[FieldError("priority", "high, normal or low")]
        )
    now = datetime.now(UTC)
    if run_at is not None and delay_seconds is not None:
        raise ValidationFailedError(
            "Give run_at or delay_seconds, not both.", errors=[FieldError("run_at", "with delay_seconds")]
        )
    if run_at is not None:
        when = run_at if run_at.tzinfo else run_at.replace(tzinfo=UTC)
        delay = max(0, math.ceil((when - now).total_seconds()))
        due = when if delay else None
    else:
        delay = max(0, delay_seconds or 0)
        due = datetime.fromtimestamp(now.timestamp() + delay, UTC) if delay else None
    settings = get_settings()
    job_id = ulid()
    item = store.new_record(
        job_id,
        job_type,
        clean,
        priority=priority,
        max_attempts=spec.max_attempts,
        run_at=due.isoformat(timespec="seconds") if due else None,
        idempotency_key=idempotency_key,
        schedule=schedule,
        source=source,
        history_days=settings.jobs.history_days,
    )
    if overlap:
        item["overlap"] = {"S": overlap}
    existing = _put(item, idempotency_key)
    if existing is not None:
        return existing
    body = json.dumps({"id": job_id, "type": job_type}, separators=(",", ":"))
    try:
        _send(priority, body, delay, job_id, due)
    except Exception as error:
        store.transition(
            job_id, "failed", expect=("pending",), sets={"error": f"not queued: {type(error).__name__}"}
        )
        raise
    events.publish(
        "BackgroundJobScheduled",
        {
            "id": job_id,
            "type": job_type,
            "priority": priority,
            "run_at": item.get("run_at", {}).get("S"),
            "source": source,
        },
    )
    return job_id


def idempotency_pk(job_type: str, key: str) -> str:
    """An idempotency key belongs to the caller and the job type: another tenant's key never returns your job."""
    from underlay import context

    return f"IDEM#{context.current().sub}#{job_type}#{key}"


def _put(item: dict[str, Any], idempotency_key: str | None) -> str | None:
    """Write the record (and claim the idempotency key with it). Returns the existing job's id on a repeat."""
    from botocore.exceptions import ClientError
    from underlay.aws import client
    from underlay.jobs import store

    ddb, table = client("dynamodb"), store.table()
    if idempotency_key is None:
        ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        return None
    item["idempotency_claim"] = {"S": idempotency_pk(item["type"]["S"], idempotency_key)}
    claim = {
        "pk": item["idempotency_claim"],
        "sk": {"S": "IDEM"},
        "job_id": item["id"],
        "expires_at": item["expires_at"],
    }
    for attempt in range(3):
        try:
            ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": table,
                            "Item": claim,
                            "ConditionExpression": "attribute_not_exists(pk)",
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                        }
                    },
                ]
            )
            return None
        except ClientError as error:
            reasons = error.response.get("CancellationReasons") or []  # type: ignore[typeddict-item]
            old: dict[str, Any] = dict(reasons[1].get("Item") or {}) if len(reasons) > 1 else {}
            if "job_id" in old:
                return str(old["job_id"]["S"])
            if attempt == 2 or not any(r.get("Code") == "TransactionConflict" for r in reasons):
                raise
            time.sleep(
                0.05 * (attempt + 1)
            )  # a concurrent enqueue with this key: its claim is there next time
    return None


def _send(priority: str, body: str, delay: int, job_id: str, due: datetime | None) -> None:
    from underlay import context
    from underlay.aws import client

    url = queue_url(priority)
    if delay <= SQS_MAX_DELAY_S:
        client("sqs").send_message(
            QueueUrl=url,
            MessageBody=body,
            DelaySeconds=delay,
            MessageAttributes={
                "traceparent": {"DataType": "String", "StringValue": context.current().traceparent}
            },
        )
        return
    from underlay.errors import ConfigInvalidError
    from underlay.settings import get_settings

    settings = get_settings().jobs
    if not settings.scheduler_role_arn:
        raise ConfigInvalidError("Jobs more than 15 minutes ahead need jobs.scheduler_role_arn.")
    assert due is not None
    client("scheduler").create_schedule(
        Name=f"job-{job_id}",
        GroupName=settings.scheduler_group,
        ScheduleExpression=f"at({due.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')})",
        ScheduleExpressionTimezone="UTC",
        FlexibleTimeWindow={"Mode": "OFF"},
        ActionAfterCompletion="DELETE",
        Target={"Arn": queue_arn(url), "RoleArn": settings.scheduler_role_arn, "Input": body},
    )


def get(job_id: str) -> dict[str, Any]:
    from underlay.jobs import store

    return store.view(store.get(job_id))


def cancel(job_id: str) -> dict[str, Any]:
    """Cancel a pending job now, or ask a running one to stop (it sees `ctx.cancelled()` and stops)."""
    from underlay import audit, events
    from underlay.jobs import store

    done = store.transition(job_id, "cancelled", expect=("pending",), sets={"finished_at": store.now_iso()})
    if done is None:
        job = store.view(store.get(job_id))
        if job["status"] != "running":
            raise ConflictError(f"The job is {job['status']}; only pending or running jobs can be cancelled.")
        store.set_fields(job_id, cancel_requested=True)
        job["cancel_requested"] = True
    else:
        job = store.view(done)
        events.publish("BackgroundJobCancelled", {"id": job_id, "type": job["type"], "while": "pending"})
    audit.record(
        "jobs.cancel",
        "job",
        job_id,
        after={"status": job["status"], "cancel_requested": job["cancel_requested"]},
    )
    return job


def retry(job_id: str) -> dict[str, Any]:
    """Run a failed job again, with a fresh set of attempts."""
    from underlay import audit, events
    from underlay.jobs import store

    done = store.transition(
        job_id,
        "pending",
        expect=("failed",),
        sets={"attempts": 0, "error": None, "finished_at": None},
        removes=("cancel_requested", "lease_until"),
        note={"retried": True},
    )
    if done is None:
        job = store.view(store.get(job_id))
        raise ConflictError(f"The job is {job['status']}; only failed jobs can be retried.")
    job = store.view(done)
    try:
        _send(
            job["priority"],
            json.dumps({"id": job_id, "type": job["type"]}, separators=(",", ":")),
            0,
            job_id,
            None,
        )
    except Exception:
        store.transition(
            job_id, "failed", expect=("pending",), sets={"error": "the retry could not be queued"}
        )
        raise
    audit.record("jobs.retry", "job", job_id, after={"status": "pending"})
    events.publish(
        "BackgroundJobStatusChanged",
        {"id": job_id, "type": job["type"], "status": "pending", "retried": True},
    )
    return job


def delete(job_id: str) -> dict[str, Any]:
    """Remove a pending job (queued or scheduled for later): its record goes, so the worker drops its message."""
    from botocore.exceptions import ClientError
    from underlay import audit
    from underlay.aws import client
    from underlay.jobs import store

    job = store.view(store.get(job_id))
    if job["status"] != "pending" or job.get("attempts"):
        raise ConflictError(f"The job is {job['status']}; only pending jobs that never ran can be deleted.")
    try:
        client("dynamodb").delete_item(
            TableName=store.table(),
            Key=store.key(job_id),
            ConditionExpression="#s = :p AND attempts = :zero",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":p": {"S": "pending"}, ":zero": {"N": "0"}},
        )
        if job.get("idempotency_claim"):  # the key is free again: a repeat enqueue makes a new job
            client("dynamodb").delete_item(
                TableName=store.table(), Key={"pk": {"S": job["idempotency_claim"]}, "sk": {"S": "IDEM"}}
            )
    except ClientError as error:
        if error_code(error) == "ConditionalCheckFailedException":
            raise ConflictError("The job started meanwhile; cancel it instead.") from error
        raise
    if job.get("run_at"):
        from underlay.settings import get_settings

        # a one-time schedule for a job more than 15 minutes ahead (a shorter delay used SQS: no schedule)
        with contextlib.suppress(ClientError):
            client("scheduler").delete_schedule(
                Name=f"job-{job_id}", GroupName=get_settings().jobs.scheduler_group
            )
    audit.record("jobs.delete", "job", job_id, before={"status": job["status"], "type": job["type"]})
    return {"id": job_id, "deleted": True}


def is_finished(status: Status) -> bool:
    return status in FINISHED
