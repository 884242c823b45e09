"""Alarms to an SNS topic, and one dashboard for the API, the functions, the queues, the cache and the jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

PERIOD = Duration.minutes(5)
HEALTH_ALERT_TOPIC_ENV = "UNDERLAY_HEALTH__ALERT_TOPIC_ARN"  # HealthSettings.alert_topic_arn
# The EMF namespace of the layer's own metrics (ObservabilitySettings.metrics_namespace) and what it emits:
# `ServerErrors` {stage, function} per 5xx answer, `ErrorSpike` {stage} once per error group per hour over the
# threshold, `Job<Outcome>` {stage} per finished job attempt (underlay.admin.recorder). Exactly those dimensions,
# no `service` (see "Metric dimensions" in underlay.observability): CloudWatch matches the whole set.
METRICS_NAMESPACE = "Underlay"
JOB_OUTCOME_METRICS = ("JobSucceeded", "JobFailed", "JobRetried", "JobCancelled")
REDIS_MEMORY_PERCENT = 80  # ElastiCache DatabaseMemoryUsagePercentage: evictions start at maxmemory


class Monitoring(Construct):
    """Alarms: API 5xx rate and p95 latency, and the same per API function (5xx answers over invocations; p95
    of the Lambda duration), throttles and errors per function, a backlog of `queue_depth` messages on any job
    queue, messages in any DLQ, Redis memory at `REDIS_MEMORY_PERCENT` on any cache node, and error spikes.

    The topic is encrypted with its own key, whose policy lets CloudWatch publish (the AWS-managed SNS key
    does not, so alarms would fail silently on it).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        http_api: apigw.IHttpApi,
        functions: Mapping[str, lambda_.IFunction],
        api_functions: Sequence[str],
        cache_cluster_ids: Sequence[str],
        queues: Mapping[str, sqs.IQueue],
        dlqs: Mapping[str, sqs.IQueue],
        queue_depth: int,
        api_5xx_rate_percent: float,
        api_p95_latency_ms: float,
        alarm_email: str | None,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self,
            "TopicKey",
            alias=f"alias/underlay-{stage}-alarms",
            description=f"Underlay {stage}: alarm topic",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
        self.topic = sns.Topic(
            self, "AlarmTopic", display_name=f"Underlay {stage} alarms", master_key=self.key, enforce_ssl=True
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self._action = cw_actions.SnsAction(self.topic)
        self._prefix = f"underlay-{stage}"
        self.alarms: dict[str, cw.Alarm] = {}

        requests = http_api.metric_count(period=PERIOD, label="requests")
        server_errors = http_api.metric_server_error(period=PERIOD, label="5xx")
        client_errors = http_api.metric_client_error(period=PERIOD, label="4xx")
        p95 = http_api.metric_latency(period=PERIOD, statistic="p95", label="latency p95")
        p50 = http_api.metric_latency(period=PERIOD, statistic="p50", label="latency p50")
        error_rate = cw.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={"errors": server_errors, "requests": requests},
            period=PERIOD,
            label="5xx %",
        )
        self._alarm(
            "api-5xx-rate", error_rate, api_5xx_rate_percent, f"API 5xx rate above {api_5xx_rate_percent}%"
        )
        self._alarm(
            "api-p95-latency", p95, api_p95_latency_ms, f"API p95 latency above {api_p95_latency_ms} ms"
        )
        for name, fn in functions.items():
            self._alarm(
                f"{name}-throttles",
                fn.metric_throttles(period=PERIOD, statistic="Sum"),
                0,
                f"Lambda {name} is throttled",
                evaluation_periods=1,
            )
            self._alarm(
                f"{name}-errors", fn.metric_errors(period=PERIOD, statistic="Sum"), 0, f"Lambda {name} errors"
            )
        self._stage = stage
        server_error_rates = {}
        for name in api_functions:
            fn = functions[name]
            rate = server_error_rates[name] = cw.MathExpression(
                # Ids unique per function: the dashboard graphs every function's expression together.
                expression=f"IF(calls_{name} > 0, 100 * FILL(errors_{name}, 0) / calls_{name}, 0)",
                using_metrics={
                    f"errors_{name}": self.metric("ServerErrors", function=name),
                    f"calls_{name}": fn.metric_invocations(period=PERIOD, statistic="Sum"),
                },
                period=PERIOD,
                label=f"{name} 5xx %",
            )
            self._alarm(
                f"{name}-5xx-rate",
                rate,
                api_5xx_rate_percent,
                f"{name}: more than {api_5xx_rate_percent}% of requests answered 5xx",
            )
            self._alarm(
                f"{name}-p95-latency",
                fn.metric_duration(period=PERIOD, statistic="p95"),
                api_p95_latency_ms,
                f"{name}: p95 duration above {api_p95_latency_ms} ms",
            )
        redis_memory = [
            _cache_node_metric("DatabaseMemoryUsagePercentage", node, "Maximum") for node in cache_cluster_ids
        ]
        for i, metric in enumerate(redis_memory):
            self._alarm(
                f"redis-memory-{i + 1}",
                metric,
                REDIS_MEMORY_PERCENT,
                f"Redis node {i + 1} uses {REDIS_MEMORY_PERCENT}% or more of its memory",
                evaluation_periods=1,
                comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            )
        error_spikes = self.metric("ErrorSpike")
        self._alarm(
            "error-spike",
            error_spikes,
            0,
            "An error group went over admin.error_spike_threshold in an hour (GET /v1/admin/errors)",
            evaluation_periods=1,
        )
        for name, queue in queues.items():
            # A backlog that size means the workers are not keeping up (or not running at all).
            self._alarm(
                f"{name}-depth",
                queue.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(1), statistic="Maximum"
                ),
                queue_depth,
                f"{queue_depth} or more messages waiting in the {name} queue",
                evaluation_periods=1,
                comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            )
        for name, dlq in dlqs.items():
            self._alarm(
                f"{name}-dlq-depth",
                dlq.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(1), statistic="Maximum"
                ),
                0,
                f"Messages in the {name} dead-letter queue",
                evaluation_periods=1,
            )

        self.dashboard = cw.Dashboard(
            self, "Dashboard", dashboard_name=f"Underlay-{stage}", default_interval=Duration.hours(6)
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="API requests and errors", left=[requests], right=[client_errors, server_errors]
            ),
            cw.GraphWidget(title="API latency (ms)", left=[p50, p95]),
            cw.GraphWidget(title="API 5xx rate (%)", left=[error_rate]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Lambda invocations",
                left=[fn.metric_invocations(period=PERIOD, label=name) for name, fn in functions.items()],
            ),
            cw.GraphWidget(
                title="Lambda errors and throttles",
                left=[
                    fn.metric_errors(period=PERIOD, label=f"{name} errors") for name, fn in functions.items()
                ],
                right=[
                    fn.metric_throttles(period=PERIOD, label=f"{name} throttles")
                    for name, fn in functions.items()
                ],
            ),
            cw.GraphWidget(
                title="Lambda duration p95 (ms)",
                left=[
                    fn.metric_duration(period=PERIOD, statistic="p95", label=name)
                    for name, fn in functions.items()
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth",
                left=[
                    q.metric_approximate_number_of_messages_visible(period=PERIOD, label=name)
                    for name, q in queues.items()
                ],
            ),
            cw.GraphWidget(
                title="Dead-letter queue depth",
                left=[
                    q.metric_approximate_number_of_messages_visible(period=PERIOD, label=f"{name} DLQ")
                    for name, q in dlqs.items()
                ],
            ),
            cw.GraphWidget(
                title="Oldest message age (s)",
                left=[
                    q.metric_approximate_age_of_oldest_message(period=PERIOD, label=name)
                    for name, q in queues.items()
                ],
            ),
        )

        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="5xx answers by API function",
                left=[self.metric("ServerErrors", function=name, label=name) for name in api_functions],
            ),
            cw.GraphWidget(title="5xx rate by API function (%)", left=list(server_error_rates.values())),
            cw.GraphWidget(
                title="Error spikes",
                left=[error_spikes],
                right=[self.metric("AdminRecordDropped", label="admin records dropped (Redis down)")],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Redis keyspace hit rate (%)",
                left=[
                    _cache_node_metric("CacheHitRate", node, "Average", label=f"node {i + 1} hit rate")
                    for i, node in enumerate(cache_cluster_ids)
                ],
            ),
            cw.GraphWidget(
                title="Redis memory (%)",
                left=[m.with_(label=f"node {i + 1} memory %") for i, m in enumerate(redis_memory)],
            ),
            cw.GraphWidget(
                title="Job outcomes",
                left=[
                    self.metric(name, label=name.removeprefix("Job").lower()) for name in JOB_OUTCOME_METRICS
                ],
            ),
        )

    def metric(self, name: str, *, label: str | None = None, **dimensions: str) -> cw.Metric:
        """A Sum of one of the layer's own EMF counts: `stage` plus `dimensions`, the exact set
        `underlay.observability.emit_metric` writes (tests/infra/test_monitoring.py runs the emitters to check)."""
        return cw.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={"stage": self._stage, **dimensions},
            period=PERIOD,
            statistic="Sum",
            label=label,
        )

    def grant_health_alerts(self, fn: lambda_.Function) -> None:
        """The `health.snapshot` job alerts on the alarm topic when a component keeps failing."""
        self.topic.grant_publish(fn)  # with the topic key's data-key actions (GenerateDataKey*, Decrypt)
        fn.add_environment(HEALTH_ALERT_TOPIC_ENV, self.topic.topic_arn)

    def _alarm(
        self,
        name: str,
        metric: cw.IMetric,
        threshold: float,
        description: str,
        *,
        evaluation_periods: int = 2,
        comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
    ) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            f"Alarm-{name}",
            alarm_name=f"{self._prefix}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[name] = alarm
        return alarm


def _cache_node_metric(name: str, node: str, statistic: str, *, label: str | None = None) -> cw.Metric:
    """An ElastiCache metric of one node (`CacheClusterId` is the node, `<replication group>-00N`)."""
    return cw.Metric(
        namespace="AWS/ElastiCache",
        metric_name=name,
        dimensions_map={"CacheClusterId": node},
        period=PERIOD,
        statistic=statistic,
        label=label,
    )
