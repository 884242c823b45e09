from __future__ import annotations

import json

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from underlay import declaration

from infra.layer_build import build_functions, build_layer
from infra.parts.cache import Cache
from infra.parts.data import Data
from infra.parts.messaging import Messaging
from infra.stage_config import StageConfig

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64


class Functions(Construct):
    """The shared layer and one function per declared function, with grants derived from the declaration."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: StageConfig,
        vpc: ec2.IVpc,
        security_group: ec2.ISecurityGroup,
        data: Data,
        cache: Cache,
        messaging: Messaging,
        version: str,
    ) -> None:
        super().__init__(scope, id)
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=lambda_.Code.from_asset(str(build_layer())),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="underlay shared package and dependencies",
        )
        code = lambda_.Code.from_asset(str(build_functions()))
        self.functions: dict[str, lambda_.Function] = {}
        for spec in declaration.FUNCTIONS:
            env = {
                "UNDERLAY_STAGE": config.stage,
                "UNDERLAY_SERVICE": "underlay",
                "UNDERLAY_VERSION": version,
                "POWERTOOLS_SERVICE_NAME": spec.name,
                "UNDERLAY_OBSERVABILITY__TRACING_ENABLED": str(config.tracing).lower(),
                "UNDERLAY_AUTH__ISSUER": config.auth.issuer,
                "UNDERLAY_AUTH__AUDIENCE": config.auth.audience,
                "UNDERLAY_AUTH__JWKS_URL": config.auth.jwks_url,
                "UNDERLAY_HTTP__CORS_ORIGINS": json.dumps(config.api.cors_origins),
            }
            log_group = logs.LogGroup(
                self,
                f"Logs-{spec.name}",
                retention=_retention(config),
                removal_policy=RemovalPolicy.DESTROY
                if config.removal_policy == "destroy"
                else RemovalPolicy.RETAIN,
            )
            fn = lambda_.Function(
                self,
                f"Fn-{spec.name}",
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                handler=spec.handler,
                code=code,
                layers=[self.layer],
                memory_size=spec.memory_mb,
                timeout=Duration.seconds(spec.timeout_s),
                description=spec.description,
                environment=env,
                log_group=log_group,
                logging_format=lambda_.LoggingFormat.JSON,
                tracing=lambda_.Tracing.ACTIVE if config.tracing else lambda_.Tracing.DISABLED,
                vpc=vpc if spec.needs_redis else None,
                vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
                if spec.needs_redis
                else None,
                security_groups=[security_group] if spec.needs_redis else None,
            )
            if spec.needs_redis:
                fn.add_environment("UNDERLAY_REDIS__HOST", cache.host)
                fn.add_environment("UNDERLAY_REDIS__PORT", "6379")
                fn.add_environment("UNDERLAY_REDIS__TLS", "true")
                fn.add_environment("UNDERLAY_REDIS__AUTH_SECRET_ARN", cache.secret.secret_arn)
                cache.secret.grant_read(fn)
            self._grant(fn, spec, data, messaging)
            self.functions[spec.name] = fn

    def _grant(
        self, fn: lambda_.Function, spec: declaration.Function, data: Data, messaging: Messaging
    ) -> None:
        for grant in spec.grants:
            if grant.kind == "table":
                names = list(data.tables) if grant.name == "*" else [grant.name]
                for name in names:
                    table = data.tables[name]
                    fn.add_environment(declaration.env_name("table", name), table.table_name)
                    if grant.access == "describe":
                        table.grant(fn, "dynamodb:DescribeTable")
                    elif grant.access == "read":
                        table.grant_read_data(fn)
                    elif grant.access == "put_only":
                        table.grant(fn, "dynamodb:PutItem", "dynamodb:ConditionCheckItem")
                    else:
                        table.grant_read_write_data(fn)
            elif grant.kind == "bucket":
                names = list(data.buckets) if grant.name == "*" else [grant.name]
                for name in names:
                    bucket = data.buckets[name]
                    fn.add_environment(declaration.env_name("bucket", name), bucket.bucket_name)
                    if grant.access == "describe":
                        fn.add_to_role_policy(
                            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
                        )
                    elif grant.access == "read":
                        bucket.grant_read(fn)
                    else:
                        bucket.grant_read_write(fn)
            elif grant.kind == "queue":
                names = list(messaging.queues) if grant.name == "*" else [grant.name]
                for name in names:
                    queue, dlq = messaging.queues[name], messaging.dlqs[name]
                    fn.add_environment(declaration.env_name("queue", name), queue.queue_url)
                    fn.add_environment(declaration.env_name("queue", f"{name}_dlq"), dlq.queue_url)
                    actions = (
                        ["sqs:GetQueueAttributes"]
                        if grant.access == "describe"
                        else ["sqs:SendMessage", "sqs:GetQueueAttributes"]
                    )
                    fn.add_to_role_policy(
                        iam.PolicyStatement(actions=actions, resources=[queue.queue_arn, dlq.queue_arn])
                    )
            elif grant.kind == "bus":
                messaging.bus.grant_put_events_to(fn)
                fn.add_environment("UNDERLAY_EVENT_BUS", messaging.bus.event_bus_name)
        if spec.grants:
            data.key.grant_decrypt(fn)


_RETENTION = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    2192: "SIX_YEARS",
    2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS",
    3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


def _retention(config: StageConfig) -> logs.RetentionDays:
    return getattr(logs.RetentionDays, _RETENTION[config.log_retention_days])  # type: ignore[no-any-return]
