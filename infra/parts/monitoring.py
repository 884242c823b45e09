from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.stage_config import StageConfig


class Monitoring(Construct):
    """An alarm topic, alarms for 5xx rate, p95 latency, throttles, errors and DLQ depth, and a dashboard."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: StageConfig,
        api: apigw.HttpApi,
        functions: dict[str, lambda_.Function],
        dlqs: dict[str, sqs.Queue],
    ) -> None:
        super().__init__(scope, id)
        self.topic = sns.Topic(self, "Alarms", enforce_ssl=True)
        if config.alarm_email:
            self.topic.add_subscription(subs.EmailSubscription(config.alarm_email))
        action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cw.Alarm] = []

        def alarm(name: str, metric: cw.IMetric, threshold: float, description: str) -> None:
            created = cw.Alarm(
                self,
                name,
                metric=metric,
                threshold=threshold,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            created.add_alarm_action(action)
            self.alarms.append(created)

        period = Duration.minutes(5)
        error_rate = cw.MathExpression(
            expression="100 * errors / MAX([requests, 1])",
            using_metrics={
                "errors": api.metric_server_error(period=period),
                "requests": api.metric_count(period=period),
            },
            period=period,
            label="5xx %",
        )
        alarm("Api5xxRate", error_rate, config.alarm_5xx_rate_percent, "API 5xx rate above threshold")
        p95 = api.metric_latency(period=period, statistic="p95")
        alarm("ApiP95Latency", p95, config.alarm_p95_latency_ms, "API p95 latency above threshold")
        for name, fn in functions.items():
            alarm(f"Throttles-{name}", fn.metric_throttles(period=period), 0, f"{name} is throttled")
            alarm(f"Errors-{name}", fn.metric_errors(period=period), 0, f"{name} raised errors")
        for name, dlq in dlqs.items():
            depth = dlq.metric_approximate_number_of_messages_visible(period=period)
            alarm(f"DlqDepth-{name}", depth, 0, f"messages in the {name} dead-letter queue")

        self.dashboard = cw.Dashboard(self, "Dashboard")
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="API requests and 5xx",
                left=[api.metric_count(period=period), api.metric_server_error(period=period)],
            ),
            cw.GraphWidget(title="API latency p95", left=[p95]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Lambda invocations",
                left=[fn.metric_invocations(period=period) for fn in functions.values()],
            ),
            cw.GraphWidget(
                title="Lambda errors", left=[fn.metric_errors(period=period) for fn in functions.values()]
            ),
            cw.GraphWidget(
                title="Lambda duration p95",
                left=[fn.metric_duration(period=period, statistic="p95") for fn in functions.values()],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="DLQ depth",
                left=[d.metric_approximate_number_of_messages_visible(period=period) for d in dlqs.values()],
            ),
        )
