"""Every sample in events/ runs through its function's real handler, as `underlay invoke` runs it (one local
stack for all of them, no background workers): none answers a 5xx or raises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from underlay import declaration

from infra.cli import _with_token
from infra.local.stack import LocalStack
from tests.conftest import EVENTS

# Samples that document an event shape no function receives directly (schedules and domain events reach
# functions through SQS: see sqs/batch.json and sqs/subscription_batch.json).
DOCUMENTATION_ONLY = {"eventbridge/scheduled.json", "eventbridge/domain_event.json", "dynamodb/stream.json"}
BY_FOLDER = {
    "authorizer": "authorizer",
    "sqs/batch.json": "worker",
    "sqs/subscription_batch.json": "subscriber",
    "sns/ses_bounce.json": "email_events",
    "dynamodb/audit_ttl_removal.json": "audit_archive",
}
SAMPLES = sorted(
    str(p.relative_to(EVENTS))
    for p in EVENTS.rglob("*.json")
    if str(p.relative_to(EVENTS)) not in DOCUMENTATION_ONLY
)


def function_for(sample: str, event: dict[str, Any]) -> str:
    if sample.startswith("http/"):
        route = declaration.route(event["routeKey"])
        return route.function if route else declaration.DEFAULT_ROUTE_FUNCTION
    return BY_FOLDER.get(sample) or BY_FOLDER[sample.split("/", maxsplit=1)[0]]


@pytest.fixture(scope="module")
def stack(redis_url: str) -> Iterator[LocalStack]:
    import os

    saved = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = redis_url
    local = LocalStack(port=0, serve_http=False, event_sources=[])
    local.start()
    try:
        yield local
    finally:
        local.stop()
        if saved is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = saved


def test_every_function_has_a_sample() -> None:
    covered = {function_for(s, json.loads((EVENTS / s).read_text())) for s in SAMPLES}
    assert covered == {f.name for f in declaration.FUNCTIONS}


@pytest.mark.parametrize("sample", SAMPLES)
def test_a_sample_runs_through_its_handler(stack: LocalStack, sample: str) -> None:
    event = json.loads(Path(EVENTS / sample).read_text())
    name = function_for(sample, event)
    result = stack.runner.invoke(name, _with_token(event, stack))
    if sample == "http/unknown_route.json":
        assert result["statusCode"] == 404 and result["headers"]["Content-Type"] == "application/problem+json"
    elif sample.startswith("http/"):  # `underlay invoke` signs the sample with a platform:admin token
        assert 200 <= result["statusCode"] < 300, result
    elif name == "authorizer":
        assert result["isAuthorized"] is True, result
    elif name in ("worker", "subscriber"):
        assert result == {"batchItemFailures": []}
    else:
        assert result is None or isinstance(result, dict)
