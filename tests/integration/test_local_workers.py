"""The local stack's job workers and scheduler, as `make dev` runs them (moto server, the real worker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel
from underlay import declaration, jobs
from underlay.job_types import JobContext, job_type

from infra.local.stack import LocalStack
from infra.local.workers import JobWorkers, Scheduler

FINISHED: list[str] = []


class Mark(BaseModel):
    key: str


@job_type("test.mark", Mark)
def mark(payload: Mark, ctx: JobContext) -> None:
    FINISHED.append(payload.key)


@pytest.fixture
def stack(clean_env: pytest.MonkeyPatch, redis_url: str) -> Iterator[LocalStack]:
    clean_env.setenv("REDIS_URL", redis_url)
    local = LocalStack(port=0, serve_http=False, event_sources=[])
    local.start()
    FINISHED.clear()
    try:
        yield local
    finally:
        local.stop()


def test_under_a_backlog_high_priority_jobs_finish_first(stack: LocalStack) -> None:
    for i in range(5):
        jobs.enqueue("test.mark", {"key": f"low-{i}"}, priority="low")
    for i in range(5):
        jobs.enqueue("test.mark", {"key": f"high-{i}"}, priority="high")
    workers = JobWorkers()
    workers.stack = stack
    while workers.tick():
        pass
    assert len(FINISHED) == 10
    assert all(k.startswith("high") for k in FINISHED[:5]) and all(k.startswith("low") for k in FINISHED[5:])


def test_the_scheduler_fires_due_cron_and_one_time_schedules(
    stack: LocalStack, clean_env: pytest.MonkeyPatch
) -> None:
    scheduler = Scheduler()
    scheduler.stack = stack
    scheduler.tick()  # learns each schedule's next run
    for name in scheduler._next:
        scheduler._next[name] = datetime.now(UTC) - timedelta(seconds=1)  # all due now
    scheduler.tick()
    sqs = stack.aws._client("sqs")
    url = stack.aws.names[declaration.env_name("queue", "jobs-normal")]
    bodies = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    ]
    assert {b["schedule"] for b in bodies} == {s.name for s in declaration.SCHEDULES}
    assert all(b["source"] == "schedule" for b in bodies)

    clean_env.setenv("UNDERLAY_JOBS__SCHEDULER_ROLE_ARN", "arn:aws:iam::000000000000:role/scheduler")
    from underlay.settings import reset_settings

    reset_settings()
    job_id = jobs.enqueue("test.mark", {"key": "later"}, run_at=datetime.now(UTC) + timedelta(minutes=20))
    client = stack.aws._client("scheduler")
    found = client.get_schedule(Name=f"job-{job_id}")
    client.update_schedule(  # make it due now, as if 20 minutes had passed
        Name=f"job-{job_id}",
        ScheduleExpression=f"at({(datetime.now(UTC) - timedelta(seconds=1)).strftime('%Y-%m-%dT%H:%M:%S')})",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target=found["Target"],
    )
    scheduler.tick()
    with pytest.raises(Exception, match="ResourceNotFound"):
        client.get_schedule(Name=f"job-{job_id}")
    workers = JobWorkers()
    workers.stack = stack
    while workers.tick():
        pass
    assert "later" in FINISHED and jobs.get(job_id)["status"] == "succeeded"
