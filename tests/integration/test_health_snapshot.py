"""`health.snapshot`: snapshots land in the history the API pages, and a failing component alerts once per streak."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from underlay.health_jobs import SnapshotPayload, snapshot

from tests.conftest import free_port, http_event


class Ctx:
    job_id, attempt = "test", 1

    def progress(self, percent: int, message: str = "") -> None: ...

    def cancelled(self) -> bool:
        return False


def test_snapshots_history_and_one_alert_per_streak(
    aws: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="alarms")["TopicArn"]
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    clean_env.setenv("UNDERLAY_HEALTH__ALERT_TOPIC_ARN", topic)
    dead = f"http://127.0.0.1:{free_port()}/health"  # nothing listens: a failing critical service
    clean_env.setenv(
        "UNDERLAY_HEALTH__EXTERNAL_SERVICES",
        json.dumps([{"name": "payments", "url": dead, "critical": True}]),
    )
    from underlay.settings import reset_settings

    reset_settings()
    results = [snapshot(SnapshotPayload(), Ctx()) for _ in range(4)]
    assert [r["status"] for r in results] == ["fail"] * 4
    assert [r["alerted"] for r in results] == [[], [], ["http:payments"], []]  # the third in a row, once
    messages = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages", [])
    assert len(messages) == 1 and "http:payments" in json.loads(messages[0]["Body"])["Message"]

    from functions.health.app import handler

    result = handler(http_event("GET", "/v1/health/history?limit=2", scopes="platform:read"), None)
    page: dict[str, Any] = json.loads(result["body"])
    assert result["statusCode"] == 200 and len(page["snapshots"]) == 2 and page["next_cursor"]
    assert page["snapshots"][0]["status"] == "fail" and "http:payments" in page["snapshots"][0]["checks"]
