"""Alarms that page someone for the failures that matter, and the dashboard."""

from __future__ import annotations

from typing import Any

from underlay import declaration

from tests.infra.conftest import Synth, ref


def _alarms(synth: Synth) -> list[dict[str, Any]]:
    return [a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()]


def _topic(synth: Synth) -> dict[str, str]:
    return ref(synth.logical_id(synth.stack.monitoring.topic))


def test_every_alarm_notifies_the_topic(synth: Synth) -> None:
    for alarm in _alarms(synth):
        assert alarm["AlarmActions"] == [_topic(synth)], alarm["AlarmName"]


def test_any_message_in_any_dlq_alarms(synth: Synth) -> None:
    dimensions = []
    for alarm in _alarms(synth):
        if alarm.get("MetricName") == "ApproximateNumberOfMessagesVisible":
            assert alarm["Namespace"] == "AWS/SQS"
            assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
            dimensions.append(alarm["Dimensions"])
    expected = [
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": [synth.logical_id(dlq), "QueueName"]}}]
        for dlq in [*synth.stack.messaging.dlqs.values(), *synth.stack.data.stream_dlqs.values()]
    ]
    assert sorted(map(str, dimensions)) == sorted(map(str, expected))
    stream_consumers = [f.name for f in declaration.FUNCTIONS if f.table_stream]
    assert sorted(synth.stack.data.stream_dlqs) == sorted(stream_consumers)
    assert len(expected) == len(declaration.QUEUES) + len(stream_consumers)


def test_api_5xx_rate_and_p95_latency_alarm_at_the_stage_thresholds(synth: Synth) -> None:
    by_name = {a["AlarmName"]: a for a in _alarms(synth)}
    rate = by_name[f"underlay-{synth.config.stage}-api-5xx-rate"]
    assert rate["Threshold"] == synth.config.alarms.api_5xx_rate_percent
    metric_names = {m["MetricStat"]["Metric"]["MetricName"] for m in rate["Metrics"] if "MetricStat" in m}
    assert metric_names == {"5xx", "Count"}
    latency = by_name[f"underlay-{synth.config.stage}-api-p95-latency"]
    assert latency["Threshold"] == synth.config.alarms.api_p95_latency_ms
    (metric,) = latency["Metrics"]
    assert metric["MetricStat"]["Metric"]["MetricName"] == "Latency"
    assert metric["MetricStat"]["Stat"] == "p95"


def test_throttles_and_errors_alarm_for_every_function(synth: Synth) -> None:
    for metric in ("Throttles", "Errors"):
        watched = [
            a["Dimensions"][0]["Value"]
            for a in _alarms(synth)
            if a.get("MetricName") == metric and a.get("Namespace") == "AWS/Lambda"
        ]
        expected = [ref(synth.logical_id(f)) for f in synth.stack.functions.functions.values()]
        assert sorted(map(str, watched)) == sorted(map(str, expected)), metric


def test_the_alarm_topic_is_encrypted_and_tls_only(synth: Synth) -> None:
    topic = synth.props(synth.logical_id(synth.stack.monitoring.topic))
    assert "KmsMasterKeyId" in topic
    statements = [
        s
        for p in synth.resources("AWS::SNS::TopicPolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert any(s["Effect"] == "Deny" and "aws:SecureTransport" in str(s.get("Condition")) for s in statements)


def test_the_dashboard_shows_api_functions_and_queues(synth: Synth) -> None:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    body = str(dashboard["Properties"]["DashboardBody"])
    for metric in (
        "Count",
        "Latency",
        "5xx",
        "Invocations",
        "Duration",
        "ApproximateNumberOfMessagesVisible",
    ):
        assert f'\\"{metric}\\"' in body or f'"{metric}"' in body, metric
