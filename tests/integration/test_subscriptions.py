"""Event-bus subscriptions on moto: rule → queue → `subscriber` handler, partial batch failures, the DLQ."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from pydantic import BaseModel
from underlay import context, declaration, jobs
from underlay.audit.query import Filters, list_entries
from underlay.job_types import JobContext, job_type
from underlay.subscriptions import SUBSCRIPTIONS, Subscription, dispatch

from infra.local.workers import sqs_event
from tests.conftest import run_queue

SEEN: list[dict[str, Any]] = []


class Nothing(BaseModel):
    pass


@job_type("test.subscriptions_poison", Nothing, max_attempts=1)
def poison(payload: Nothing, ctx: JobContext) -> None:
    raise ValueError("poisoned on purpose")


def remember(event: dict[str, Any]) -> str:
    """A subscription handler that records the event and the context it ran in."""
    SEEN.append({"event": event, "correlation_id": context.current().correlation_id})
    return "ok"


def explode(event: dict[str, Any]) -> None:
    if event["detail"].get("explode"):
        raise RuntimeError("handler failed on purpose")
    remember(event)


@pytest.fixture
def env(aws: dict[str, str]) -> dict[str, str]:
    SEEN.clear()
    return aws


def sqs() -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def subscription_queue(sub: Subscription, prefix: str = "t") -> tuple[str, str, str]:
    """`sub-<name>` and its DLQ, as the declaration will make them: (url, arn, dlq url)."""
    client = sqs()
    dlq = client.create_queue(QueueName=f"{prefix}-{sub.dlq_name}")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(sub.max_receive_count)}
    url = client.create_queue(
        QueueName=f"{prefix}-{sub.queue_name}", Attributes={"RedrivePolicy": json.dumps(redrive)}
    )["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn, dlq


def receive(url: str, arn: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    messages = (
        sqs()
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=0)
        .get("Messages", [])
    )
    return messages, sqs_event(messages, arn)


def eventbridge_event(detail: dict[str, Any], detail_type: str = "OrderPlaced") -> str:
    return json.dumps(
        {
            "version": "0",
            "id": f"evt-{len(json.dumps(detail))}-{detail.get('n', 0)}",
            "detail-type": detail_type,
            "source": "myapp.orders",
            "account": "123456789012",
            "time": "2025-01-01T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail,
        }
    )


def worker_drain(env: dict[str, str]) -> None:
    run_queue(env, "jobs-normal", rounds=1)


def test_a_failed_job_reaches_the_audit_log_through_bus_queue_and_subscriber(env: dict[str, str]) -> None:
    from functions.subscriber.app import handler

    (sub,) = (s for s in SUBSCRIPTIONS if s.name == "audit-on-job-failure")
    url = env[declaration.env_name("queue", sub.queue_name)]  # the declared queue; the fixture wired its rule
    arn = sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    job_id = jobs.enqueue("test.subscriptions_poison", {})
    jobs.enqueue("cache.warm", {"warmers": []})  # succeeds: BackgroundJobExecuted must not reach the queue
    worker_drain(env)
    assert jobs.get(job_id)["status"] == "failed"

    messages, event = receive(url, arn)
    assert [json.loads(m["Body"])["detail-type"] for m in messages] == ["BackgroundJobFailed"]
    assert handler(event, None) == {"batchItemFailures": []}
    entries, _ = list_entries(Filters(action="jobs.failed"))
    (entry,) = entries
    assert (entry["entity_type"], entry["entity_id"], entry["result"]) == ("job", job_id, "failure")
    assert entry["actor"] == "system:jobs" and entry["correlation_id"] == job_id  # the job's trace, carried
    assert entry["after"]["type"] == "test.subscriptions_poison"
    assert "poisoned on purpose" in entry["after"]["error"]
    assert entry["after"]["event_id"] == json.loads(messages[0]["Body"])["id"]


def test_a_failing_handler_fails_only_its_record_and_ends_in_the_dlq(env: dict[str, str]) -> None:
    flaky = Subscription(
        "flaky",
        {"source": ["myapp.orders"]},
        "tests.integration.test_subscriptions:explode",
        max_receive_count=2,
    )
    url, arn, dlq = subscription_queue(flaky)
    sqs().send_message(QueueUrl=url, MessageBody=eventbridge_event({"n": 1, "correlation_id": "c-1"}))
    sqs().send_message(QueueUrl=url, MessageBody=eventbridge_event({"n": 2, "explode": True}))

    calls = 0
    while True:
        messages, event = receive(url, arn)
        if not messages:
            break
        calls += 1
        response = dispatch(event, None, subscriptions=[flaky])
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        exploding = {m["MessageId"] for m in messages if json.loads(m["Body"])["detail"].get("explode")}
        assert failed == exploding  # only the failing record is reported; the good one is done
        done = [m for m in messages if m["MessageId"] not in failed]
        for m in done:
            sqs().delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        assert calls <= 5, "the failing message must leave the queue after max_receive_count receives"

    assert [s["event"]["detail"]["n"] for s in SEEN] == [1]
    assert SEEN[0]["correlation_id"] == "c-1"
    dead = sqs().receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["detail"]["n"] for m in dead] == [2]


def test_records_that_cannot_be_delivered_fail_alone(env: dict[str, str]) -> None:
    ok = Subscription("ok", {"source": ["myapp.orders"]}, "tests.integration.test_subscriptions:remember")
    url, arn, _ = subscription_queue(ok)
    other_url, other_arn, _ = subscription_queue(Subscription("unknown", {"source": ["x"]}, "m:f"))
    sqs().send_message(QueueUrl=url, MessageBody=eventbridge_event({"n": 1}))
    sqs().send_message(QueueUrl=url, MessageBody="not json")
    sqs().send_message(QueueUrl=url, MessageBody=json.dumps({"just": "a message"}))
    messages, event = receive(url, arn)
    sqs().send_message(QueueUrl=other_url, MessageBody=eventbridge_event({"n": 9}))
    strays, stray_event = receive(other_url, other_arn)
    event["Records"].extend(stray_event["Records"])  # a record from a queue no subscription reads

    response = dispatch(event, None, subscriptions=[ok])
    good = next(m["MessageId"] for m in messages if m["Body"].startswith("{") and "detail" in m["Body"])
    expected = {m["MessageId"] for m in messages + strays} - {good}
    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == expected
    assert [s["event"]["detail"]["n"] for s in SEEN] == [1]


def test_a_failing_handler_fills_its_error_group_and_its_last_attempt_reaches_sentry(
    env: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    """Every failed delivery is an occurrence of the group (source `subscription:<name>`, the event's correlation
    id); Sentry hears of the last receive before the DLQ only, as of a job's final attempt."""
    import uuid

    from underlay import sentry
    from underlay.admin import errors
    from underlay.settings import reset_settings

    clean_env.setenv("UNDERLAY_REDIS__PREFIX", f"t{uuid.uuid4().hex[:8]}:")
    reset_settings()
    reported: list[tuple[BaseException, dict[str, str]]] = []
    clean_env.setattr(sentry, "capture_exception", lambda exc, **tags: reported.append((exc, tags)))
    flaky = Subscription(
        "flaky",
        {"source": ["myapp.orders"]},
        "tests.integration.test_subscriptions:explode",
        max_receive_count=2,
    )
    url, arn, _ = subscription_queue(flaky, prefix="g")
    sqs().send_message(
        QueueUrl=url, MessageBody=eventbridge_event({"explode": True, "correlation_id": "c-9"})
    )
    for _ in range(2):
        messages, event = receive(url, arn)
        assert len(messages) == 1
        assert len(dispatch(event, None, subscriptions=[flaky])["batchItemFailures"]) == 1
    (group,), _, _ = errors.list_groups()
    assert (group["source"], group["type"], group["count"]) == ("subscription:flaky", "RuntimeError", 2)
    assert group["message"] == "handler failed on purpose" and group["samples"] == ["c-9", "c-9"]
    assert group["frame"].endswith("test_subscriptions.py:explode")
    ((error, tags),) = reported
    assert str(error) == "handler failed on purpose"
    assert tags == {"source": "subscription:flaky", "subscription": "flaky"}
