"""Domain events: catalogue, correlation in every detail, batching, and a failed publish never failing the caller."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws
from underlay import context, events
from underlay.aws import client, count_aws_calls
from underlay.settings import get_settings

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def bus(clean_env: pytest.MonkeyPatch) -> Iterator[Any]:
    """A bus whose every event lands in an SQS queue, so tests read what was really published."""
    with mock_aws():
        eb, sqs = client("events"), client("sqs")
        eb.create_event_bus(Name="test-bus")
        url = sqs.create_queue(QueueName="sink")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        eb.put_rule(
            Name="all", EventBusName="test-bus", EventPattern=json.dumps({"source": [{"prefix": ""}]})
        )
        eb.put_targets(Rule="all", EventBusName="test-bus", Targets=[{"Id": "sink", "Arn": arn}])
        clean_env.setenv("UNDERLAY_EVENT_BUS", "test-bus")
        get_settings()  # the cold load publishes ConfigurationLoaded; tests read only their own events
        sqs.purge_queue(QueueUrl=url)

        def received() -> list[dict[str, Any]]:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            return [json.loads(m["Body"]) for m in messages]

        yield received


def test_a_published_event_carries_correlation_and_traceparent(bus: Any) -> None:
    with context.bound(
        context.RequestContext(correlation_id="corr-1", traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    ):
        events.publish("FeatureFlagToggled", {"key": "checkout", "enabled": True})
    [event] = bus()
    assert event["source"] == "underlay.flags" and event["detail-type"] == "FeatureFlagToggled"
    assert event["detail"]["key"] == "checkout"
    assert event["detail"]["correlation_id"] == "corr-1"
    assert event["detail"]["traceparent"].startswith("00-aaaa")


def test_a_batch_sends_at_the_end_ten_per_call(bus: Any) -> None:
    with count_aws_calls() as calls, events.batch():
        for i in range(12):
            events.publish("CacheInvalidated", {"key": f"k{i}"})
        assert calls.total == 0  # nothing sent inside the block
    assert calls.by_operation == {"events.PutEvents": 2}
    received = bus() + bus()
    assert len(received) >= 10  # SQS hands back at most 10 per receive


def test_an_uncatalogued_builtin_event_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="catalogue"):
        events.publish("FeatureFlagToggeled", {})
    with pytest.raises(ValueError):
        events.publish("CacheInvalidated", {}, source="underlay.flags")


def test_app_teams_publish_their_own_events(bus: Any) -> None:
    events.publish("OrderPlaced", {"order": 7}, source="shop.orders")
    [event] = bus()
    assert event["source"] == "shop.orders" and event["detail"]["order"] == 7


def test_a_failed_publish_never_raises(clean_env: pytest.MonkeyPatch) -> None:
    with mock_aws():
        clean_env.setenv("UNDERLAY_EVENT_BUS", "no-such-bus")
        events.publish("CacheWarmed", {"keys": 3})  # the bus does not exist: logged and counted, not raised
        clean_env.setenv("UNDERLAY_HEALTH__CHECK_TIMEOUT_SECONDS", "not-a-number")
        from underlay.settings import reset_settings

        reset_settings()
        events.publish("CacheWarmed", {"keys": 3})  # even invalid settings do not reach the caller


def test_no_bus_configured_drops_events_quietly() -> None:
    with count_aws_calls() as calls:
        events.publish("CacheWarmed", {"keys": 3})
    assert calls.total == 0
