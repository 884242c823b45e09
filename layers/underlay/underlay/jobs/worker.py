"""The job worker: one SQS batch at a time, with Powertools BatchProcessor and partial batch responses.

For each message:
1. A scheduled message (from EventBridge Scheduler: `{"type", "payload", "schedule", "overlap"}`, no id) first
   becomes a job record, its id derived from the SQS message id, so a redelivery finds the same job.
2. `pending → running` is one conditional UpdateItem that also counts the attempt and sets a lease (the job
   type's timeout). It fails for a job that already succeeded, failed, was cancelled or is running under a live
   lease: then the message is dropped, so a duplicate delivery never runs a job twice. A `running` job whose
   lease ran out (its worker died) is taken over.
3. The handler runs with a `JobContext`: `progress(percent, message)` and `cancelled()`, which polls the record.
4. Success: `running → succeeded` with the result summary and duration. A cancel seen while running:
   `running → cancelled`. A failure before the last attempt: `running → pending` with the error, and the
   message's visibility is set to the backoff delay (ChangeMessageVisibility), so SQS redelivers it then; the
   queues' visibility timeout is 6x the worker timeout, so a slow retry is never picked up twice. The last
   failure: `running → failed`, and the message goes to the queue's DLQ (where `GET /v1/jobs/dead-letters` shows
   it and redrive replays it).
A warm job costs two AWS calls of its own: the two status writes.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from underlay.admin.recorder import record_job
from underlay.aws import error_code
from underlay.jobs import store

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord


class RetryLater(Exception):
    """The job failed an attempt and will be retried after its backoff delay."""


class WorkerJobContext:
    """What a running job sees: its id and attempt, progress reporting, and the cancel flag."""

    def __init__(self, job_id: str, attempt: int, poll_seconds: float) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._poll = poll_seconds
        self._checked = time.monotonic()
        self.cancel_seen = False

    def progress(self, percent: int, message: str = "") -> None:
        store.set_fields(self.job_id, progress=max(0, min(100, int(percent))), progress_message=message[:256])

    def cancelled(self) -> bool:
        if self.cancel_seen:
            return True
        if time.monotonic() - self._checked >= self._poll:
            self._checked = time.monotonic()
            item = store.get(self.job_id)
            self.cancel_seen = bool(item.get("cancel_requested", {}).get("BOOL"))
        return self.cancel_seen


def handle(event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
    """The Lambda entry point for SQS batches: `{"batchItemFailures": [...]}`."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from underlay import events
    from underlay.config import runtime

    # A batch whose every job is being retried is not an invocation error: each message has its own delay.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with events.batch():
        runtime.batch_boundary("worker")  # pick up changed settings and the log level (issue 5)
        return process_partial_response(  # type: ignore[return-value]
            event=event, record_handler=run_record, processor=processor, context=lambda_context
        )


def _queues(record: SQSRecord) -> tuple[str, str]:
    """(the URL of the queue a record came from, the URL of its DLQ), from the record's queue ARN."""
    from underlay.settings import get_settings

    queues = get_settings().queues
    name = record.event_source_arn.rsplit(":", 1)[-1]
    for logical, url in queues.items():
        if url.rstrip("/").endswith("/" + name):
            return url, queues.get(f"{logical}_dlq", "")
    raise LookupError(f"no configured queue for {name}")


def _materialize(body: dict[str, Any], record: SQSRecord) -> str | None:
    """A scheduled message becomes a job record once. Its id comes from the schedule and the time it was due
    (EventBridge Scheduler fills `scheduled_time`), so a firing delivered twice is one job; without it, from the
    SQS message id. A message that cannot become a job (unknown type, bad payload) goes to the DLQ: None."""
    from botocore.exceptions import ClientError
    from pydantic import ValidationError
    from underlay import job_types
    from underlay.aws import client
    from underlay.ids import ulid_for
    from underlay.settings import get_settings

    due = body.get("scheduled_time") or ""
    try:
        due_ms = int(datetime.fromisoformat(due.replace("Z", "+00:00")).timestamp() * 1000)
        job_id = ulid_for(due_ms, f"{body.get('schedule')}@{due}")
    except ValueError:  # not filled in (a manual send): one job per message
        job_id = ulid_for(int(record.attributes.sent_timestamp or time.time() * 1000), record.message_id)
    try:
        spec = job_types.get(body["type"])
        payload = spec.payload_model.model_validate(body.get("payload") or {}).model_dump(mode="json")
    except (KeyError, ValidationError) as error:
        _to_dead_letters(record, {**body, "error": f"not a valid job: {type(error).__name__}"})
        return None
    item = store.new_record(
        job_id,
        body["type"],
        payload,
        priority=body.get("priority", "normal"),
        max_attempts=spec.max_attempts,
        run_at=None,
        idempotency_key=None,
        schedule=body.get("schedule"),
        source=body.get("source", "schedule"),
        history_days=get_settings().jobs.history_days,
    )
    if body.get("overlap"):
        item["overlap"] = {"S": body["overlap"]}
    try:
        client("dynamodb").put_item(
            TableName=store.table(), Item=item, ConditionExpression="attribute_not_exists(pk)"
        )
    except ClientError as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise
    return job_id


def _to_dead_letters(record: SQSRecord, body: dict[str, Any]) -> None:
    from underlay.aws import client

    client("sqs").send_message(QueueUrl=_queues(record)[1], MessageBody=json.dumps(body, default=str))


def run_record(record: SQSRecord, lambda_context: Any = None) -> dict[str, Any] | None:
    """Process one message. Returns normally to delete it; raises to leave it for SQS to redeliver."""
    from underlay import context, job_types

    body = json.loads(record.body)
    job_id = body.get("id") or _materialize(body, record)
    if job_id is None:
        return None  # sent to the DLQ
    try:
        spec = job_types.get(body["type"])
    except KeyError:
        _to_dead_letters(record, {**body, "error": "unknown job type"})
        return None
    remaining_s = lambda_context.get_remaining_time_in_millis() / 1000 if lambda_context is not None else None
    if remaining_s is not None and remaining_s < spec.timeout_s:
        # Not enough of this invocation left to run it: leave the message (no attempt counted) for a fresh one.
        raise RetryLater(f"{remaining_s:.0f} s left; the job may take {spec.timeout_s} s")
    started = store.start(job_id, lease_seconds=_lease_seconds(spec))
    if started is None:
        _not_started(job_id)
        return None
    job = store.view(started)
    if job.get("overlap") == "skip" and job.get("schedule") and not _claim_schedule(job):
        store.transition(
            job_id,
            "cancelled",
            expect=("running",),
            owner_attempt=job["attempts"],
            note={"reason": "overlap: the previous run is still running"},
        )
        return None
    attributes = record.raw_event.get("messageAttributes") or {}
    traceparent = str((attributes.get("traceparent") or {}).get("stringValue") or "")
    ctx = WorkerJobContext(job_id, job["attempts"], _settings().cancel_poll_seconds)
    began = time.perf_counter()
    with context.bound(
        context.RequestContext(
            correlation_id=job_id,
            traceparent=traceparent or context.new_traceparent(),
            sub="system:jobs",
            route=job["type"],
        )
    ):
        try:
            payload = spec.payload_model.model_validate(job["payload"])
            result = spec.handler(payload, ctx)
        except Exception as error:
            _failed(job, spec, record, error, began)  # raises RetryLater while attempts remain
            return None
        finally:
            _release_schedule(job)
        _finished(job, ctx, result, began)
        return None


def _lease_seconds(spec: Any) -> int:
    """How long a run owns its job: at least the worker's own timeout, so no live run is ever taken over."""
    from underlay import declaration

    return max(int(spec.timeout_s), declaration.function("worker").timeout_s) + 30


def _settings() -> Any:
    from underlay.settings import get_settings

    return get_settings().jobs


def _not_started(job_id: str) -> None:
    """The job could not move to running: drop the message, after settling a cancel request that waits on it."""
    from underlay.errors import NotFoundError

    try:
        job = store.view(store.get(job_id))
    except NotFoundError:
        return  # deleted while queued
    if job["cancel_requested"] and job["status"] in ("pending", "running"):
        # Pending: cancelled before it ran. Running: only if its lease ran out (its worker is gone).
        store.transition(
            job_id,
            "cancelled",
            expect=(job["status"],),
            extra_condition=None if job["status"] == "pending" else "lease_until < :now",
            condition_values=None if job["status"] == "pending" else {":now": {"N": str(int(time.time()))}},
        )
    # finished, cancelled or running elsewhere: never run it twice


def _finished(job: dict[str, Any], ctx: WorkerJobContext, result: Any, began: float) -> None:
    from underlay import events

    duration_ms = round((time.perf_counter() - began) * 1000, 2)
    if ctx.cancel_seen:
        store.transition(
            job["id"],
            "cancelled",
            expect=("running",),
            sets={"finished_at": store.now_iso(), "duration_ms": int(duration_ms)},
            removes=("lease_until",),
            attempt=job["attempts"],
            owner_attempt=job["attempts"],
        )
        events.publish("BackgroundJobCancelled", {"id": job["id"], "type": job["type"], "while": "running"})
        record_job(job["type"], "cancelled")
        return None
    summary = json.dumps(result, default=str, separators=(",", ":"))
    if len(summary) > _settings().result_max_bytes:
        summary = json.dumps({"truncated": True, "bytes": len(summary)})
    store.transition(
        job["id"],
        "succeeded",
        expect=("running",),
        attempt=job["attempts"],
        sets={
            "result": summary,
            "finished_at": store.now_iso(),
            "duration_ms": int(duration_ms),
            "progress": 100,
        },
        removes=("lease_until",),
    )
    events.publish(
        "BackgroundJobExecuted",
        {"id": job["id"], "type": job["type"], "duration_ms": duration_ms, "attempts": job["attempts"]},
    )
    record_job(job["type"], "succeeded")
    return None


def _failed(job: dict[str, Any], spec: Any, record: SQSRecord, error: Exception, began: float) -> None:
    from underlay import events
    from underlay.aws import client
    from underlay.observability import get_logger

    message = f"{type(error).__name__}: {str(error)[:500]}"
    attempt = int(job["attempts"])
    # Every failed attempt is an occurrence of its error group; the outcome says whether it is retried.
    record_job(job["type"], "retried" if attempt < int(job["max_attempts"]) else "failed", error)
    if attempt >= int(job["max_attempts"]):  # a final failure reaches Sentry (when configured), once per job
        from underlay import sentry

        if sentry.capture_exception(error, job_type=str(job["type"]), job_id=str(job["id"])) is not None:
            sentry.flush(timeout=1.0)  # before Lambda can freeze the instance
    get_logger().warning(
        "job attempt failed",
        extra={"job_id": job["id"], "type": job["type"], "attempt": attempt, "error": message},
    )
    if attempt < int(job["max_attempts"]):
        delay = spec.backoff.delay_s(attempt)
        retrying = store.transition(
            job["id"],
            "pending",
            expect=("running",),
            attempt=attempt,
            owner_attempt=attempt,
            sets={"error": message},
            removes=("lease_until",),
            note={"error": message, "retry_in_s": round(delay, 3)},
        )
        if retrying is None:
            return  # taken over (or cancelled) meanwhile: this run's outcome no longer counts
        client("sqs").change_message_visibility(
            QueueUrl=_queues(record)[0],
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=max(0, round(delay)),
        )
        raise RetryLater(message) from error
    # The DLQ first: if that send fails, the message stays and a later delivery gets here again.
    _to_dead_letters(record, {"id": job["id"], "type": job["type"], "error": message})
    store.transition(
        job["id"],
        "failed",
        expect=("running",),
        attempt=attempt,
        owner_attempt=attempt,
        sets={
            "error": message,
            "finished_at": store.now_iso(),
            "duration_ms": int((time.perf_counter() - began) * 1000),
        },
        removes=("lease_until",),
        note={"error": message},
    )
    events.publish(
        "BackgroundJobFailed", {"id": job["id"], "type": job["type"], "attempts": attempt, "error": message}
    )


def _schedule_key(name: str) -> dict[str, Any]:
    return {"pk": {"S": f"SCHED#{name}"}, "sk": {"S": "RUN"}}


def _claim_schedule(job: dict[str, Any]) -> bool:
    """`overlap: skip`: only one run of a schedule at a time (a lease, so a dead run cannot block it forever)."""
    from botocore.exceptions import ClientError
    from underlay.aws import client

    now = int(time.time())
    try:
        client("dynamodb").put_item(
            TableName=store.table(),
            Item={
                **_schedule_key(job["schedule"]),
                "job_id": {"S": job["id"]},
                "lease_until": {"N": str(now + 900)},
            },
            ConditionExpression="attribute_not_exists(pk) OR lease_until < :now OR job_id = :id",
            ExpressionAttributeValues={":now": {"N": str(now)}, ":id": {"S": job["id"]}},
        )
    except ClientError as error:
        if error_code(error) == "ConditionalCheckFailedException":
            return False
        raise
    job["_claimed"] = True
    return True


def _release_schedule(job: dict[str, Any]) -> None:
    if not job.get("_claimed"):
        return
    from botocore.exceptions import ClientError
    from underlay.aws import client

    with contextlib.suppress(ClientError):  # someone else took over an expired lease
        client("dynamodb").delete_item(
            TableName=store.table(),
            Key=_schedule_key(job["schedule"]),
            ConditionExpression="job_id = :id",
            ExpressionAttributeValues={":id": {"S": job["id"]}},
        )
