"""Shared fixtures: a real redis-server per session, moto for AWS, sample events, a local issuer."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # handlers import as `functions.<name>.app`, as on Lambda

REDIS_MISSING = (
    "redis-server is not on PATH. The Redis tests need a real server: "
    "`sudo apt-get install -y redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)."
)


def load_event(name: str) -> dict[str, Any]:
    """A sample event from events/, e.g. `load_event("http/health_details")`."""
    return json.loads((EVENTS / f"{name}.json").read_text())


def http_event(
    method: str, path: str, *, scopes: str | None = None, sub: str = "tester", body: Any = None
) -> dict[str, Any]:
    """An HTTP API v2 event from the sample, for `path` (query string included) as the authorizer passes it on:
    with `scopes` the caller is `sub` holding them; without, the request is anonymous."""
    from urllib.parse import parse_qsl

    event = load_event("http/health_details")
    raw_path, _, query = path.partition("?")
    event["routeKey"] = "$default"  # the factory matches method and path against the declaration itself
    event["rawPath"] = event["requestContext"]["http"]["path"] = raw_path
    event["requestContext"]["http"]["method"] = method
    event["rawQueryString"] = query
    event["queryStringParameters"] = dict(parse_qsl(query)) or None
    if scopes is not None:
        event["requestContext"]["authorizer"] = {"lambda": {"sub": sub, "scopes": scopes}}
    if body is not None:
        event["body"] = json.dumps(body)
        event["headers"]["content-type"] = "application/json"
    return event


def run_queue(
    env: dict[str, str], queue: str = "jobs-normal", *, function: str = "worker", rounds: int = 10
) -> list[dict[str, Any]]:
    """Run a declared queue's messages through a function's handler as Lambda's SQS poller would (moto): deliver
    batches, delete what the partial batch response does not report as failed; returns the batch responses."""
    import importlib

    import boto3
    from underlay import declaration

    from infra.local.workers import sqs_event

    handler = importlib.import_module(f"functions.{function}.app").handler
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = env[declaration.env_name("queue", queue)]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    responses = []
    for _ in range(rounds):
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            break
        response = handler(sqs_event(messages, arn), None)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        responses.append(response)
    return responses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free port for the whole session; fails (never skips) when missing."""
    from infra.local.stack import RedisProcess

    if shutil.which("redis-server") is None:
        pytest.fail(REDIS_MISSING, pytrace=False)
    with RedisProcess() as url:
        yield url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No UNDERLAY_* or AWS endpoint from the caller's shell; every process cache reset before and after."""
    for name in list(os.environ):
        if name.startswith("UNDERLAY_") or name.startswith("AWS_ENDPOINT_URL") or name == "REDIS_URL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    from infra.local.stack import _reset_process_caches

    _reset_process_caches()
    yield monkeypatch
    _reset_process_caches()


@pytest.fixture
def issuer(tmp_path: Path) -> Any:
    from infra.local.issuer import LocalIssuer

    return LocalIssuer(tmp_path / "issuer-key.pem")


@pytest.fixture
def aws(clean_env: pytest.MonkeyPatch, redis_url: str) -> Iterator[dict[str, str]]:
    """moto (`mock_aws`) with every declared resource created as the local stack creates them, the session's
    real Redis, and the environment that names them all; yields that environment."""
    import boto3
    from moto import mock_aws

    from infra.local.stack import create_declared_resources

    with mock_aws():
        names = create_declared_resources(lambda service: boto3.client(service, region_name="us-east-1"), "t")
        for name, value in names.items():
            clean_env.setenv(name, value)
        clean_env.setenv("UNDERLAY_REDIS__URL", redis_url)
        yield names


@pytest.fixture
def moto_server(clean_env: pytest.MonkeyPatch, redis_url: str) -> Iterator[dict[str, str]]:
    """A moto server with every declared resource, so two processes share one AWS; yields the environment
    (set in this process too) that a child process needs."""
    from infra.local.stack import AwsService, _reset_process_caches

    aws = AwsService()
    aws.start()
    env = {
        **aws.names,
        "AWS_ENDPOINT_URL": aws.endpoint,
        "UNDERLAY_REDIS__URL": redis_url,
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    _reset_process_caches()
    try:
        yield env
    finally:
        aws.stop()
        _reset_process_caches()
