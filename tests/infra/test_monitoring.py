"""Alarms that page someone for the failures that matter, and the dashboard."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from underlay import declaration

from infra.constructs.monitoring import (
    HEALTH_ALERT_TOPIC_ENV,
    JOB_OUTCOME_METRICS,
    METRICS_NAMESPACE,
    REDIS_MEMORY_PERCENT,
)
from tests.infra.conftest import Synth, allowed, get_att, ref, role_statements


def _alarms(synth: Synth) -> list[dict[str, Any]]:
    return [a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()]


def _topic(synth: Synth) -> dict[str, str]:
    return ref(synth.logical_id(synth.stack.monitoring.topic))


def test_every_alarm_notifies_the_topic(synth: Synth) -> None:
    for alarm in _alarms(synth):
        assert alarm["AlarmActions"] == [_topic(synth)], alarm["AlarmName"]


def _queue_alarms(synth: Synth, queues: list[Any]) -> dict[str, dict[str, Any]]:
    """The alarm on each queue's ApproximateNumberOfMessagesVisible, by queue logical ID (one each)."""
    found: dict[str, dict[str, Any]] = {}
    ids = {synth.logical_id(q) for q in queues}
    for alarm in _alarms(synth):
        if alarm.get("MetricName") != "ApproximateNumberOfMessagesVisible":
            continue
        (dimension,) = alarm["Dimensions"]
        assert dimension["Name"] == "QueueName" and alarm["Namespace"] == "AWS/SQS"
        queue = dimension["Value"]["Fn::GetAtt"][0]
        if queue in ids:
            assert queue not in found, f"two depth alarms on {queue}"
            found[queue] = alarm
    return found


def test_any_message_in_any_dlq_alarms(synth: Synth) -> None:
    messaging = synth.stack.messaging
    dlqs = [
        *messaging.dlqs.values(),
        *synth.stack.data.stream_dlqs.values(),
        *messaging.topic_dlqs.values(),
    ]
    alarms = _queue_alarms(synth, dlqs)
    assert set(alarms) == {synth.logical_id(q) for q in dlqs}
    for alarm in alarms.values():
        assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["EvaluationPeriods"] == 1
    stream_consumers = [f.name for f in declaration.FUNCTIONS if f.table_stream]
    topic_consumers = [f.name for f in declaration.FUNCTIONS if f.topic]
    assert sorted(synth.stack.data.stream_dlqs) == sorted(stream_consumers)
    assert sorted(messaging.topic_dlqs) == sorted(topic_consumers) == ["email_events"]
    assert len(dlqs) == len(declaration.QUEUES) + len(stream_consumers) + len(topic_consumers)
    # The subscriptions' DLQs are among them (events their handler kept failing, or the rule could not deliver).
    assert any(q.name.startswith("sub-") for q in declaration.QUEUES)


def test_a_job_queue_backlog_of_the_stage_threshold_alarms(synth: Synth) -> None:
    """SPEC: a queue depth >= 1000 fires an alarm, for every job queue; the subscriptions' queues too (a backlog
    there means the subscriber is not keeping up either)."""
    assert synth.config.alarms.queue_depth == 1000
    queues = list(synth.stack.messaging.queues.values())
    assert len(queues) == len(declaration.QUEUES)
    alarms = _queue_alarms(synth, queues)
    assert set(alarms) == {synth.logical_id(q) for q in queues}
    for alarm in alarms.values():
        assert alarm["Threshold"] == synth.config.alarms.queue_depth
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["Statistic"] == "Maximum" and alarm["Period"] == 60
        assert alarm["EvaluationPeriods"] == 1


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


def test_the_job_worker_may_alert_on_the_alarm_topic(synth: Synth) -> None:
    """`health.snapshot` runs in the job worker and alerts on the topic after a streak of failures."""
    monitoring = synth.stack.monitoring
    topic, key = ref(synth.logical_id(monitoring.topic)), synth.logical_id(monitoring.key)
    workers = {f.name for f in declaration.FUNCTIONS if any(not q.startswith("sub-") for q in f.consumes)}
    assert workers == {"worker"}
    assert "subscriber" not in workers  # it consumes subscription queues only, and runs no job
    for spec in declaration.FUNCTIONS:
        statements = role_statements(synth, spec.name)
        env = synth.props(synth.logical_id(synth.stack.functions.functions[spec.name]))["Environment"]
        if spec.name in workers:
            assert allowed(statements, "sns:") == {"sns:Publish": {json.dumps(topic)}}
            kms = allowed(statements, "kms:")
            assert json.dumps(get_att(key)) in kms["kms:GenerateDataKey*"]
            assert env["Variables"][HEALTH_ALERT_TOPIC_ENV] == topic
        else:
            assert not allowed(statements, "sns:"), spec.name
            assert HEALTH_ALERT_TOPIC_ENV not in env["Variables"], spec.name


# --- issue 8: per-function RED alarms, Redis memory, error spikes, the dashboard (CDK assertions) ---------


@pytest.fixture(scope="module")
def template(synth: Synth) -> Template:
    """The session's one synth as an assertions Template (no second synth)."""
    return Template.from_json(synth.template)


def _api_functions() -> list[str]:
    return sorted({r.function for r in declaration.ROUTES})


def test_every_api_function_alarms_on_its_5xx_rate(synth: Synth, template: Template) -> None:
    assert _api_functions() == ["admin", "audit", "cache", "config", "flags", "health", "jobs"]
    for name in _api_functions():
        fn = ref(synth.logical_id(synth.stack.functions.functions[name]))
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "AlarmName": f"underlay-{synth.config.stage}-{name}-5xx-rate",
                "Threshold": synth.config.alarms.api_5xx_rate_percent,
                "ComparisonOperator": "GreaterThanThreshold",
                "AlarmActions": [_topic(synth)],
                "Metrics": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Expression": f"IF(calls_{name} > 0, 100 * FILL(errors_{name}, 0) / calls_{name}, 0)"
                            }
                        ),
                        Match.object_like(
                            {
                                "Id": f"errors_{name}",
                                "MetricStat": Match.object_like(
                                    {
                                        "Metric": {
                                            "Namespace": METRICS_NAMESPACE,
                                            "MetricName": "ServerErrors",
                                            "Dimensions": Match.array_with(
                                                [
                                                    {"Name": "function", "Value": name},
                                                    {"Name": "stage", "Value": synth.config.stage},
                                                ]
                                            ),
                                        },
                                        "Stat": "Sum",
                                    }
                                ),
                            }
                        ),
                        Match.object_like(
                            {
                                "Id": f"calls_{name}",
                                "MetricStat": Match.object_like(
                                    {
                                        "Metric": Match.object_like(
                                            {
                                                "MetricName": "Invocations",
                                                "Dimensions": [{"Name": "FunctionName", "Value": fn}],
                                            }
                                        )
                                    }
                                ),
                            }
                        ),
                    ]
                ),
            },
        )
    names = {a["AlarmName"] for a in _alarms(synth)}
    assert {n for n in names if n.endswith("-5xx-rate")} == {
        f"underlay-{synth.config.stage}-{n}-5xx-rate" for n in ["api", *_api_functions()]
    }  # none for the authorizer, workers or stream consumers: they answer no HTTP status


def test_every_api_function_alarms_on_its_p95_latency(synth: Synth, template: Template) -> None:
    for name in _api_functions():
        fn = ref(synth.logical_id(synth.stack.functions.functions[name]))
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "AlarmName": f"underlay-{synth.config.stage}-{name}-p95-latency",
                "Namespace": "AWS/Lambda",
                "MetricName": "Duration",
                "ExtendedStatistic": "p95",
                "Dimensions": [{"Name": "FunctionName", "Value": fn}],
                "Threshold": synth.config.alarms.api_p95_latency_ms,
                "AlarmActions": [_topic(synth)],
            },
        )


def test_redis_memory_alarms_at_80_percent_on_every_node(synth: Synth, template: Template) -> None:
    group = synth.logical_id(synth.stack.cache.group)
    nodes = 1 + synth.config.redis.replicas
    for n in range(1, nodes + 1):
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "Namespace": "AWS/ElastiCache",
                "MetricName": "DatabaseMemoryUsagePercentage",
                "Dimensions": [
                    {"Name": "CacheClusterId", "Value": {"Fn::Join": ["", [ref(group), f"-{n:03d}"]]}}
                ],
                "Threshold": REDIS_MEMORY_PERCENT,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "Statistic": "Maximum",
                "AlarmActions": [_topic(synth)],
            },
        )
    memory = [a for a in _alarms(synth) if a.get("MetricName") == "DatabaseMemoryUsagePercentage"]
    assert len(memory) == nodes


def test_an_error_spike_alarms(synth: Synth, template: Template) -> None:
    """The alarm's metric; that the layer emits it with exactly these dimensions is checked below."""
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": f"underlay-{synth.config.stage}-error-spike",
            "Namespace": METRICS_NAMESPACE,
            "MetricName": "ErrorSpike",
            "Dimensions": [{"Name": "stage", "Value": synth.config.stage}],
            "Statistic": "Sum",
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "EvaluationPeriods": 1,
            "AlarmActions": [_topic(synth)],
            "OKActions": [_topic(synth)],
        },
    )


def test_the_dashboard_shows_red_cache_queues_and_job_outcomes(template: Template) -> None:
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    # The body is a Fn::Join of JSON text and tokens (ARNs, names): its text parts are enough here.
    body = "".join(p for p in dashboard["Properties"]["DashboardBody"]["Fn::Join"][1] if isinstance(p, str))
    for title in (
        "5xx answers by API function",
        "5xx rate by API function (%)",
        "Redis keyspace hit rate (%)",
        "Redis memory (%)",
        "Queue depth",
        "Job outcomes",
        "Error spikes",
    ):
        assert f'"title":"{title}"' in body, title
    for metric in (
        "ServerErrors",
        "CacheHitRate",
        "DatabaseMemoryUsagePercentage",
        "ErrorSpike",
        *JOB_OUTCOME_METRICS,
    ):
        assert f'"{metric}"' in body, metric
    template.has_resource_properties(
        "AWS::CloudWatch::Dashboard", {"DashboardName": Match.string_like_regexp("^Underlay-")}
    )


# --- the layer's EMF and the alarms agree (review 2): run the real emitting code as on Lambda -------------


def _layer_metrics(synth: Synth) -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """(namespace, name, sorted dimensions) of every metric in the layer's namespace that an alarm or the
    dashboard watches."""
    found = set()
    for alarm in _alarms(synth):
        stats = (
            [alarm]
            if "MetricName" in alarm
            else [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
        )
        for metric in stats:
            if metric.get("Namespace") == METRICS_NAMESPACE:
                dims = tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
                found.add((metric["Namespace"], metric["MetricName"], dims))
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = json.loads("".join(p if isinstance(p, str) else "token" for p in parts))
    for widget in body["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            fields = [f for f in metric if isinstance(f, str)]
            if len(fields) >= 2 and fields[0] == METRICS_NAMESPACE:
                dims = tuple(sorted(zip(fields[2::2], fields[3::2], strict=True)))
                found.add((fields[0], fields[1], dims))
    return found


def test_every_layer_metric_an_alarm_or_the_dashboard_watches_is_emitted_with_exactly_its_dimensions(
    synth: Synth,
    clean_env: pytest.MonkeyPatch,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """CloudWatch matches a metric by its whole dimension set: one extra dimension (Powertools adds `service`
    from POWERTOOLS_SERVICE_NAME, which CDK sets to each function's name) and the alarm never gets a datapoint.
    So each metric is produced by the code that emits it in production, under the env CDK gives that function."""
    from underlay import events
    from underlay.admin import errors, recorder
    from underlay.admin.settings import AdminSettings
    from underlay.http import RequestInfo
    from underlay.observability import reset_observability

    env = {k: v for k, v in _function_env(synth, "admin").items() if k.startswith("POWERTOOLS_")}
    assert env["POWERTOOLS_SERVICE_NAME"] == "admin"  # what made `service` leak in
    clean_env.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    clean_env.setenv("UNDERLAY_STAGE", synth.config.stage)
    monkeypatch.setattr(events, "publish", lambda *_, **__: None)
    routes = {r.function: r for r in declaration.ROUTES}

    def as_function(name: str) -> None:
        clean_env.setenv("POWERTOOLS_SERVICE_NAME", _function_env(synth, name)["POWERTOOLS_SERVICE_NAME"])
        reset_observability()

    for name in _api_functions():
        as_function(name)
        route = routes[name]
        recorder.hook.after(RequestInfo({}, route.method, route.path, route), 500, {})
    as_function("worker")
    for outcome in ("succeeded", "failed", "retried", "cancelled"):
        recorder.record_job("test.job", outcome)
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        errors.check_spike(errors.occurrence(error, "job:x", "c"), 3, AdminSettings(error_spike_threshold=3))
    recorder._dropped(None)

    emitted = set()
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            (dimension_set,) = directive["Dimensions"]
            dims = tuple(sorted((d, document[d]) for d in dimension_set))
            for metric in directive["Metrics"]:
                emitted.add((directive["Namespace"], metric["Name"], dims))
    watched = _layer_metrics(synth)
    assert {m[1] for m in watched} >= {
        "ServerErrors",
        "ErrorSpike",
        "AdminRecordDropped",
        *JOB_OUTCOME_METRICS,
    }
    assert watched - emitted == set()


def _function_env(synth: Synth, name: str) -> dict[str, Any]:
    fn = synth.stack.functions.functions[name]
    return dict(synth.props(synth.logical_id(fn))["Environment"]["Variables"])
