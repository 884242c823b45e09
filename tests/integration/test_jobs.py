"""Background jobs on moto: enqueue, the worker (retries, DLQ, duplicates, cancel, overlap), the API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from pydantic import BaseModel
from underlay import declaration, jobs
from underlay.aws import count_aws_calls
from underlay.job_types import Backoff, JobContext, job_type
from underlay.jobs import query, schedules
from underlay.settings import get_settings

from tests.conftest import http_event, run_queue

RUNS: dict[str, int] = {}


class Echo(BaseModel):
    key: str = "default"
    fail_times: int = 0  # fail this many attempts, then succeed


@job_type("test.echo", Echo, max_attempts=3, backoff=Backoff(base_s=1, factor=2, cap_s=16, jitter=False))
def echo(payload: Echo, ctx: JobContext) -> dict[str, Any]:
    RUNS[payload.key] = RUNS.get(payload.key, 0) + 1
    if RUNS[payload.key] <= payload.fail_times:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return {"key": payload.key, "attempt": ctx.attempt}


@job_type("test.once", Echo, max_attempts=1)
def once(payload: Echo, ctx: JobContext) -> None:
    raise ValueError("poison")


@job_type("test.cancels_itself", Echo)
def cancels_itself(payload: Echo, ctx: JobContext) -> str:
    jobs.cancel(ctx.job_id)  # what an operator does while the job runs
    for _ in range(100):
        if ctx.cancelled():
            return "stopped"
    return "ran to the end"


@pytest.fixture
def env(aws: dict[str, str], clean_env: pytest.MonkeyPatch) -> dict[str, str]:
    clean_env.setenv("UNDERLAY_JOBS__CANCEL_POLL_SECONDS", "0")
    RUNS.clear()
    return aws


def sqs() -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def url(env: dict[str, str], queue: str) -> str:
    return env[declaration.env_name("queue", queue)]


def drain(env: dict[str, str], queue: str = "jobs-normal", *, rounds: int = 10) -> list[dict[str, Any]]:
    return run_queue(env, queue, rounds=rounds)


def test_enqueue_run_and_history(env: dict[str, str]) -> None:
    get_settings()  # a warm instance: the configuration is loaded
    with count_aws_calls() as calls:
        job_id = jobs.enqueue("test.echo", {"key": "a"}, priority="normal")
        enqueue_calls = calls.by_operation
    assert enqueue_calls == {"dynamodb.PutItem": 1, "sqs.SendMessage": 1, "events.PutEvents": 0} | {
        k: v for k, v in enqueue_calls.items() if k == "events.PutEvents"
    }
    assert jobs.get(job_id)["status"] == "pending"
    drain(env)
    job = jobs.get(job_id)
    assert (
        job["status"] == "succeeded" and job["attempts"] == 1 and job["result"] == {"key": "a", "attempt": 1}
    )
    assert [h["status"] for h in job["history"]] == ["pending", "running", "succeeded"]
    assert job["duration_ms"] >= 0 and job["progress"] == 100 and job["finished_at"]


def test_execute_costs_two_status_writes(env: dict[str, str]) -> None:
    from underlay import events

    jobs.enqueue("test.echo", {"key": "count"})
    with events.batch(), count_aws_calls() as calls:
        drain(env)
        during = calls.by_operation
    worker_calls = {k: v for k, v in during.items() if k.startswith("dynamodb.")}
    assert worker_calls == {"dynamodb.UpdateItem": 2}


def test_idempotency_key_returns_the_same_job(env: dict[str, str]) -> None:
    first = jobs.enqueue("test.echo", {"key": "i"}, idempotency_key="order-42")
    second = jobs.enqueue("test.echo", {"key": "i"}, idempotency_key="order-42")
    assert first == second
    assert (
        int(
            sqs().get_queue_attributes(
                QueueUrl=url(env, "jobs-normal"), AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
        == 1
    )


def test_bad_enqueues_name_the_field(env: dict[str, str]) -> None:
    from underlay.errors import ValidationFailedError

    with pytest.raises(ValidationFailedError) as unknown:
        jobs.enqueue("nope.nope", {})
    assert unknown.value.errors[0].field == "type"
    with pytest.raises(ValidationFailedError) as bad:
        jobs.enqueue("test.echo", {"fail_times": "many"})
    assert bad.value.errors[0].field == "payload.fail_times"


def test_retries_follow_the_backoff_then_fail_to_the_dlq(env: dict[str, str]) -> None:
    from underlay.aws import session

    visibility: list[int] = []
    session().events.register(
        "provide-client-params.sqs.ChangeMessageVisibility",
        lambda params, **_: visibility.append(params["VisibilityTimeout"]),
    )
    job_id = jobs.enqueue("test.echo", {"key": "r", "fail_times": 5})
    drain(env)  # attempt 1 fails: visibility set to the 1 s backoff, so the message comes back later
    job = jobs.get(job_id)
    assert job["status"] == "pending" and job["attempts"] == 1 and "attempt 1 fails" in job["error"]
    assert visibility == [1]
    for _ in range(2):  # the message comes back when its backoff delay has passed (moto honours visibility)
        message = sqs().receive_message(
            QueueUrl=url(env, "jobs-normal"), VisibilityTimeout=0, WaitTimeSeconds=5
        )
        assert message.get("Messages"), "the retried message must come back after its delay"
        drain(env)
    assert visibility == [1, 2]  # base 1 s doubling
    job = jobs.get(job_id)
    assert job["status"] == "failed" and job["attempts"] == 3
    assert [h["status"] for h in job["history"]] == [
        "pending",
        "running",
        "pending",
        "running",
        "pending",
        "running",
        "failed",
    ]
    letters = query.dead_letters()
    normal = next(q for q in letters if q["queue"] == "jobs-normal")
    assert normal["depth"] == 1 and normal["messages"][0]["job_id"] == job_id


def test_a_poison_message_goes_to_the_dlq_and_the_batch_succeeds(env: dict[str, str]) -> None:
    good = [jobs.enqueue("test.echo", {"key": f"g{i}"}) for i in range(2)]
    bad = jobs.enqueue("test.once", {})
    responses = drain(env)
    assert responses[0]["batchItemFailures"] == []
    assert all(jobs.get(j)["status"] == "succeeded" for j in good)
    assert jobs.get(bad)["status"] == "failed" and "ValueError: poison" in jobs.get(bad)["error"]
    assert next(q for q in query.dead_letters() if q["queue"] == "jobs-normal")["depth"] == 1


def test_duplicate_deliveries_run_the_job_once(env: dict[str, str]) -> None:
    job_id = jobs.enqueue("test.echo", {"key": "dup"})
    body = json.dumps({"id": job_id, "type": "test.echo"})
    for _ in range(2):  # the same message delivered twice more
        sqs().send_message(QueueUrl=url(env, "jobs-normal"), MessageBody=body)
    drain(env)
    assert RUNS["dup"] == 1 and jobs.get(job_id)["status"] == "succeeded"


def test_cancel_a_pending_job_and_a_running_one(env: dict[str, str]) -> None:
    pending = jobs.enqueue("test.echo", {"key": "never"})
    assert jobs.cancel(pending)["status"] == "cancelled"
    running = jobs.enqueue("test.cancels_itself", {})
    drain(env)
    assert "never" not in RUNS and jobs.get(pending)["status"] == "cancelled"
    job = jobs.get(running)
    assert job["status"] == "cancelled" and job["cancel_requested"]
    from underlay.errors import ConflictError

    with pytest.raises(ConflictError):
        jobs.cancel(running)


def test_run_at_beyond_fifteen_minutes_uses_a_one_time_schedule(
    env: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("UNDERLAY_JOBS__SCHEDULER_ROLE_ARN", "arn:aws:iam::123456789012:role/scheduler")
    from underlay.settings import reset_settings

    reset_settings()
    when = datetime.now(UTC) + timedelta(hours=2)
    job_id = jobs.enqueue("test.echo", {"key": "later"}, run_at=when)
    scheduler = boto3.client("scheduler", region_name="us-east-1")
    found = scheduler.get_schedule(Name=f"job-{job_id}")
    assert found["ScheduleExpression"] == f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})"
    assert json.loads(found["Target"]["Input"]) == {"id": job_id, "type": "test.echo"}
    assert found["Target"]["Arn"].endswith(":t-jobs-normal")
    assert jobs.get(job_id)["run_at"].startswith(when.strftime("%Y-%m-%dT%H:%M"))
    assert jobs.delete(job_id) == {"id": job_id, "deleted": True}
    with pytest.raises(Exception, match="ResourceNotFound"):
        scheduler.get_schedule(Name=f"job-{job_id}")


def test_overlap_skip_drops_a_run_while_the_last_one_runs(env: dict[str, str]) -> None:
    schedule = declaration.Schedule("test-every-minute", "* * * * ? *", "UTC", "test.echo", {"key": "s"})
    message = schedules.message(schedule)
    boto3.client("dynamodb", region_name="us-east-1").put_item(
        TableName=env["UNDERLAY_TABLES__JOBS"],
        Item={
            "pk": {"S": "SCHED#test-every-minute"},
            "sk": {"S": "RUN"},
            "job_id": {"S": "OTHER"},
            "lease_until": {"N": "9999999999"},
        },
    )
    sqs().send_message(QueueUrl=url(env, "jobs-normal"), MessageBody=json.dumps(message))
    drain(env)
    assert "s" not in RUNS
    skipped, _ = query.list_jobs(query.Filters(status="cancelled"))
    assert skipped and "overlap" in skipped[0]["history"][-1]["reason"]
    boto3.client("dynamodb", region_name="us-east-1").delete_item(
        TableName=env["UNDERLAY_TABLES__JOBS"],
        Key={"pk": {"S": "SCHED#test-every-minute"}, "sk": {"S": "RUN"}},
    )
    sqs().send_message(QueueUrl=url(env, "jobs-normal"), MessageBody=json.dumps(message))
    drain(env)
    assert RUNS["s"] == 1  # the lease is released after the run, so the next one may start


def test_dead_letters_redrive(env: dict[str, str]) -> None:
    job_id = jobs.enqueue("test.echo", {"key": "phoenix", "fail_times": 3})
    for attempt in range(3):
        if attempt:  # wait out the backoff delay
            sqs().receive_message(QueueUrl=url(env, "jobs-normal"), VisibilityTimeout=0, WaitTimeSeconds=5)
        drain(env)
    assert jobs.get(job_id)["status"] == "failed"
    assert query.redrive("normal") == {"redriven": 1, "jobs": [job_id]}
    assert jobs.get(job_id)["status"] == "pending"
    drain(env)
    assert jobs.get(job_id)["status"] == "succeeded"
    assert next(q for q in query.dead_letters() if q["queue"] == "jobs-normal")["depth"] == 0


def test_list_filters_and_metrics(env: dict[str, str]) -> None:
    ids = [jobs.enqueue("test.echo", {"key": f"m{i}"}, priority="high" if i % 2 else "low") for i in range(4)]
    drain(env, "jobs-high")
    done, _ = query.list_jobs(query.Filters(status="succeeded"))
    assert {j["id"] for j in done} == {ids[1], ids[3]}
    low, _ = query.list_jobs(query.Filters(priority="low"))
    assert [j["id"] for j in low] == [ids[2], ids[0]]  # newest first
    page, cursor = query.list_jobs(query.Filters(), limit=3)
    rest, end = query.list_jobs(query.Filters(), limit=3, cursor=cursor)
    assert len(page) == 3 and len(rest) == 1 and end is None
    stats = query.metrics()
    assert stats["queues"]["jobs-low"]["depth"] == 2 and stats["last_24h"]["succeeded"] == 2
    assert stats["last_24h"]["success_rate"] == 1.0 and stats["last_24h"]["p95_duration_ms"] is not None


# --- the API ---------------------------------------------------------------------------------------


def call(
    method: str, path: str, *, scopes: str = "jobs:read jobs:write", body: Any = None
) -> tuple[int, Any]:
    from functions.jobs.app import handler

    result = handler(http_event(method, path, scopes=scopes, sub="ops", body=body), None)
    return result["statusCode"], json.loads(result["body"])


def test_the_api(env: dict[str, str]) -> None:
    status, created = call(
        "POST", "/v1/jobs", body={"type": "test.echo", "payload": {"key": "api"}, "priority": "high"}
    )
    assert status == 202 and created["status"] == "pending"
    status, job = call("GET", f"/v1/jobs/{created['id']}")
    assert status == 200 and {"id", "type", "status", "attempts", "history"} <= job.keys()
    assert (
        call("POST", "/v1/jobs", body={"type": "test.echo", "payload": {"fail_times": "x"}})[1]["errors"][0][
            "field"
        ]
        == "payload.fail_times"
    )
    assert call("POST", f"/v1/jobs/{created['id']}/retry")[0] == 409  # only failed jobs
    assert call("POST", f"/v1/jobs/{created['id']}/cancel")[1]["status"] == "cancelled"
    assert call("GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV")[0] == 404
    assert call("GET", "/v1/jobs?status=cancelled")[1]["jobs"][0]["id"] == created["id"]
    status, listed = call("GET", "/v1/jobs/schedules")
    assert {s["name"] for s in listed["schedules"]} == {s.name for s in declaration.SCHEDULES}
    status, triggered = call("POST", "/v1/jobs/schedules/cache-statistics/trigger")
    assert status == 202 and jobs.get(triggered["id"])["schedule"] == "cache-statistics"
    assert call("POST", "/v1/jobs/schedules/nope/trigger")[0] == 404
    assert call("GET", "/v1/jobs/metrics")[0] == 200
    assert call("GET", "/v1/jobs/dead-letters")[0] == 200
    assert call("POST", "/v1/jobs", scopes="jobs:read", body={"type": "test.echo"})[0] == 403


def test_cancel_and_retry_are_audited(env: dict[str, str]) -> None:
    job_id = jobs.enqueue("test.echo", {"key": "aud"})
    call("POST", f"/v1/jobs/{job_id}/cancel")
    from underlay.audit.query import Filters, list_entries

    entries, _ = list_entries(Filters(entity_type="job", entity_id=job_id))
    assert [e["action"] for e in entries] == ["jobs.cancel"] and entries[0]["actor"] == "ops"


def test_a_schedule_firing_delivered_twice_is_one_job(env: dict[str, str]) -> None:
    schedule = declaration.Schedule(
        "test-twice", "0 * * * ? *", "UTC", "test.echo", {"key": "twice"}, "allow"
    )
    fired = {**schedules.message(schedule), "scheduled_time": "2026-11-25T10:00:00Z"}
    for _ in range(2):  # EventBridge Scheduler delivers at least once
        sqs().send_message(QueueUrl=url(env, "jobs-normal"), MessageBody=json.dumps(fired))
    drain(env)
    assert RUNS["twice"] == 1
    assert (
        len(
            [
                j
                for j in query.list_jobs(query.Filters(type="test.echo"))[0]
                if j.get("schedule") == "test-twice"
            ]
        )
        == 1
    )


def test_a_scheduled_message_for_an_unknown_job_goes_to_the_dlq(env: dict[str, str]) -> None:
    bad = {"type": "no.such.job", "payload": {}, "schedule": "x", "source": "schedule"}
    sqs().send_message(QueueUrl=url(env, "jobs-normal"), MessageBody=json.dumps(bad))
    assert drain(env)[0]["batchItemFailures"] == []
    letters = next(q for q in query.dead_letters() if q["queue"] == "jobs-normal")
    assert letters["depth"] == 1 and "not a valid job" in letters["messages"][0]["error"]


def test_a_taken_over_run_cannot_overwrite_the_new_run(env: dict[str, str]) -> None:
    from underlay.jobs import store

    job_id = jobs.enqueue("test.echo", {"key": "lease"})
    first = store.start(job_id, lease_seconds=-1)  # its worker "dies": the lease is already over
    assert first is not None
    second = store.start(job_id, lease_seconds=300)  # a redelivery takes the job over
    assert second is not None and store.view(second)["attempts"] == 2
    # the first run finishes late: its write is refused, the second run's stands
    late = store.transition(job_id, "succeeded", expect=("running",), owner_attempt=1)
    assert late is None and jobs.get(job_id)["status"] == "running"


def test_retry_clears_a_cancel_request_and_redrive_skips_a_job_that_runs_again(env: dict[str, str]) -> None:
    from underlay.jobs import store

    job_id = jobs.enqueue("test.once", {})
    drain(env)  # fails for good: failed, and its message in the DLQ
    store.set_fields(job_id, cancel_requested=True)  # a cancel that came too late
    assert jobs.retry(job_id)["cancel_requested"] is False
    store.start(job_id, lease_seconds=300)  # the retry is running now
    assert query.redrive("normal") == {"redriven": 0, "jobs": []}  # its old dead letter is stale
    assert jobs.get(job_id)["status"] == "running"


def test_run_at_with_an_offset_is_scheduled_in_utc(
    env: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    from datetime import timezone

    clean_env.setenv("UNDERLAY_JOBS__SCHEDULER_ROLE_ARN", "arn:aws:iam::123456789012:role/scheduler")
    from underlay.settings import reset_settings

    reset_settings()
    local = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    job_id = jobs.enqueue("test.echo", {"key": "tz"}, run_at=local)
    found = boto3.client("scheduler", region_name="us-east-1").get_schedule(Name=f"job-{job_id}")
    assert found["ScheduleExpression"] == "at(2030-01-01T10:00:00)"
    # the record outlives the wait: history is kept after the job is due, not after it was enqueued
    item = boto3.client("dynamodb", region_name="us-east-1").get_item(
        TableName=env["UNDERLAY_TABLES__JOBS"], Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}
    )["Item"]
    assert int(item["expires_at"]["N"]) > local.timestamp()


def test_list_dates_without_a_zone_are_utc(env: dict[str, str]) -> None:
    jobs.enqueue("test.echo", {"key": "dated"})
    status, page = call("GET", "/v1/jobs?from=2020-01-01&to=2100-01-02T00:00:00Z")
    assert status == 200 and len(page["jobs"]) == 1
    status, problem = call("GET", "/v1/jobs?from=2100-01-01&to=2020-01-02T00:00:00Z")
    assert status == 422 and problem["errors"][0]["field"] == "from"
