"""Alarms to an SNS topic, and one dashboard for the API, the functions and the queues."""

from __future__ import annotations

from collections.abc import Mapping

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


class Monitoring(Construct):
    """Alarms: API 5xx rate, API p95 latency, throttles and errors per function, a backlog of `queue_depth`
    messages on any job queue, messages in any DLQ.

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
