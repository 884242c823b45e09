"""Health against moto (`mock_aws`) and a real redis-server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from underlay import declaration

from tests.conftest import http_event


@pytest.fixture
def stack(clean_env: pytest.MonkeyPatch, redis_url: str) -> Iterator[pytest.MonkeyPatch]:
    """Every declared table, bucket and queue in moto, and the session's real Redis."""
    with mock_aws():
        ddb, s3, sqs = (boto3.client(s, region_name="us-east-1") for s in ("dynamodb", "s3", "sqs"))
        for table in declaration.TABLES:
            keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
            ddb.create_table(
                TableName=f"t-{table.name}",
                KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
                AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                BillingMode="PAY_PER_REQUEST",
            )
            clean_env.setenv(declaration.env_name("table", table.name), f"t-{table.name}")
        for bucket in declaration.BUCKETS:
            s3.create_bucket(Bucket=f"b-{bucket.name}")
            clean_env.setenv(declaration.env_name("bucket", bucket.name), f"b-{bucket.name}")
        for queue in declaration.QUEUES:
            for name in (queue.name, queue.dlq_name):
                url = sqs.create_queue(QueueName=f"q-{name}")["QueueUrl"]
                clean_env.setenv(declaration.env_name("queue", name), url)
        clean_env.setenv("UNDERLAY_REDIS__URL", redis_url)
        clean_env.setenv("UNDERLAY_HEALTH__CACHE_SECONDS", "0")
        yield clean_env


def call(path: str, *, scopes: str | None = "platform:read") -> tuple[int, dict[str, Any]]:
    from functions.health.app import handler

    result = handler(http_event("GET", path, scopes=scopes or "", sub="ops"), None)
    return result["statusCode"], json.loads(result["body"])


@pytest.mark.usefixtures("stack")
def test_details_pass_with_every_component_measured() -> None:
    status, body = call("/v1/health/details")
    assert status == 200 and body["status"] == "pass", body
    checks = body["checks"]
    assert checks["redis:responseTime"][0]["observedUnit"] == "ms"
    assert checks["redis:usedMemory"][0]["observedValue"] > 0
    assert "redis:keyspaceHits" in checks and "redis:keyspaceMisses" in checks
    for table in declaration.TABLES:
        assert checks[f"dynamodb:{table.name}:responseTime"][0]["output"] == "ACTIVE"
    for bucket in declaration.BUCKETS:
        assert checks[f"s3:{bucket.name}:responseTime"][0]["status"] == "pass"
    for queue in declaration.QUEUES:
        assert checks[f"sqs:{queue.name}:dlqDepth"][0]["observedValue"] == 0


@pytest.mark.usefixtures("stack")
def test_groups_only_check_their_components() -> None:
    _, cache = call("/v1/health/cache")
    assert {k.split(":")[0] for k in cache["checks"]} == {"redis"}
    _, jobs = call("/v1/health/jobs")
    assert {k.split(":")[0] for k in jobs["checks"]} == {"sqs"}
    _, db = call("/v1/health/database")
    assert {k.split(":")[0] for k in db["checks"]} == {"dynamodb", "s3"}


def test_redis_down_degrades_to_warn(stack: pytest.MonkeyPatch) -> None:
    stack.setenv("UNDERLAY_REDIS__URL", "redis://127.0.0.1:1/0")
    status, body = call("/v1/health/details")
    assert status == 200 and body["status"] == "warn"
    assert body["checks"]["redis:status"][0]["status"] == "fail"


def test_a_missing_critical_table_fails_with_503(stack: pytest.MonkeyPatch) -> None:
    stack.setenv(declaration.env_name("table", "flags"), "does-not-exist")
    status, body = call("/v1/health/ready", scopes=None)
    assert status == 503 and body["status"] == "fail"
    assert "checks" in body and all(set(v[0]) == {"status", "time"} for v in body["checks"].values())


def test_dlq_over_threshold_warns(stack: pytest.MonkeyPatch) -> None:
    stack.setenv("UNDERLAY_HEALTH__DLQ_WARN_THRESHOLD", "1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName="q-jobs-low-dlq")["QueueUrl"], MessageBody="{}")
    status, body = call("/v1/health/jobs")
    assert status == 200 and body["status"] == "warn"
    assert body["checks"]["sqs:jobs-low:dlqDepth"][0] == {
        **body["checks"]["sqs:jobs-low:dlqDepth"][0],
        "status": "warn",
    }


def test_a_slow_check_times_out_without_holding_the_response(stack: pytest.MonkeyPatch) -> None:
    from underlay import health

    stack.setenv("UNDERLAY_HEALTH__CHECK_TIMEOUT_SECONDS", "0.3")
    health.register_checker(
        health.Checker("slow", "services", "http", lambda _: time.sleep(2) or [], critical=False)
    )
    try:
        started = time.monotonic()
        status, body = call("/v1/health/services")
        assert time.monotonic() - started < 1.5
        assert status == 200 and body["status"] == "warn"
        assert "timed out" in body["checks"]["slow:status"][0]["output"]
    finally:
        health._extra.clear()


def test_results_are_cached_per_instance(stack: pytest.MonkeyPatch) -> None:
    from underlay.aws import count_aws_calls

    stack.setenv("UNDERLAY_HEALTH__CACHE_SECONDS", "30")
    call("/v1/health/database")
    with count_aws_calls() as calls:
        call("/v1/health/database")
        call("/v1/health/database")
    assert calls.total == 0


@pytest.mark.usefixtures("stack")
def test_the_call_counter_sees_every_aws_call() -> None:
    from underlay.aws import count_aws_calls
    from underlay.settings import get_settings

    get_settings()  # a warm instance: the configuration is loaded
    with count_aws_calls() as calls:
        call("/v1/health/database")
    expected = len(declaration.TABLES) + len(declaration.BUCKETS)
    assert calls.total == expected
    assert calls.by_operation["dynamodb.DescribeTable"] == len(declaration.TABLES)


@pytest.mark.usefixtures("stack")
def test_history_is_empty_until_the_snapshot_job_exists() -> None:
    status, body = call("/v1/health/history")
    assert status == 200 and body == {"snapshots": [], "next_cursor": None}


def test_history_pages_newest_first_with_a_signed_cursor(stack: pytest.MonkeyPatch) -> None:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    for minute in range(3):
        ddb.put_item(
            TableName="t-health_history",
            Item={
                "pk": {"S": "snapshot"},
                "sk": {"S": f"2026-11-25T10:0{minute}:00+00:00"},
                "status": {"S": "pass"},
            },
        )
    status, first = call("/v1/health/history?limit=2")
    assert status == 200, first
    assert [s["sk"][14:16] for s in first["snapshots"]] == ["02", "01"]
    assert first["next_cursor"]
    status, second = call(f"/v1/health/history?limit=2&cursor={first['next_cursor']}")
    assert status == 200 and [s["sk"][14:16] for s in second["snapshots"]] == ["00"]
    assert second["next_cursor"] is None
    forged = first["next_cursor"][:-2] + ("AA" if not first["next_cursor"].endswith("AA") else "BB")
    status, problem = call(f"/v1/health/history?limit=2&cursor={forged}")
    assert status == 400 and problem["code"] == "INVALID_CURSOR"


def test_external_services_from_config(stack: pytest.MonkeyPatch) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    stack.setenv(
        "UNDERLAY_HEALTH__EXTERNAL_SERVICES",
        json.dumps(
            [
                {"name": "payments", "url": f"{base}/ok"},
                {"name": "search", "url": f"{base}/bad", "critical": True},
            ]
        ),
    )
    try:
        status, body = call("/v1/health/services")
    finally:
        server.shutdown()
    assert body["checks"]["http:payments:responseTime"][0]["status"] == "pass"
    assert body["checks"]["http:search:responseTime"][0]["status"] == "fail"
    assert status == 503 and body["status"] == "fail"  # search is critical
