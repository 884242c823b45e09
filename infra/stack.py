"""`Underlay-<stage>`: composes the constructs and grants each function what the declaration says it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy, Stack, Tags
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from underlay import declaration
from underlay.settings import STAGE_SETTINGS_ENV

from infra.constructs.api import Api
from infra.constructs.audit import Audit
from infra.constructs.cache import Cache
from infra.constructs.data import Data
from infra.constructs.email import Email
from infra.constructs.functions import Functions
from infra.constructs.messaging import Messaging, is_job_worker
from infra.constructs.monitoring import Monitoring
from infra.constructs.network import Network
from infra.constructs.secrets import Secrets
from infra.constructs.storage import CDN_BASE_URL_ENV, Storage
from infra.stage_config import LOG_RETENTION_DAYS, StageConfig

SERVICE = "underlay"

_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
assert set(_RETENTION) == set(LOG_RETENTION_DAYS), "stage_config and the RetentionDays table disagree"


def retention(days: int) -> logs.RetentionDays:
    """The RetentionDays member for a day count `stage_config` accepted."""
    return _RETENTION[days]


class UnderlayStack(Stack):
    """Every resource comes from `underlay.declaration` and the stage config; nothing is declared twice."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: StageConfig,
        version: str,
        release_id: str,
        layer_dir: Path,
        code_dir: Path,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, description=f"Underlay {config.stage} ({version})", **kwargs)
        Tags.of(self).add("service", SERVICE)
        Tags.of(self).add("stage", config.stage)
        removal = RemovalPolicy.DESTROY if config.removal_policy == "destroy" else RemovalPolicy.RETAIN
        log_retention = retention(config.log_retention_days)

        self.network = Network(
            self,
            "Network",
            nat_gateways=config.network.nat_gateways,
            max_azs=config.network.max_azs,
            endpoints_single_az=config.network.endpoints_single_az,
            log_retention=log_retention,
            removal_policy=removal,
        )
        self.data = Data(
            self,
            "Data",
            stage=config.stage,
            removal_policy=removal,
            audit_retention_days=config.audit_retention_days,
            access_log_retention_days=config.log_retention_days,
        )
        self.cache = Cache(
            self,
            "Cache",
            stage=config.stage,
            vpc=self.network.vpc,
            subnets=self.network.private_subnets,
            clients=self.network.functions_sg,
            node_type=config.redis.node_type,
            replicas=config.redis.replicas,
        )
        self.storage = Storage(
            self,
            "Storage",
            stage=config.stage,
            bucket=self.data.buckets["storage"],
            log_bucket=self.data.access_logs,
            cors_origins=config.api.cors_origins,
            cdn=config.cdn.enabled,
            price_class=config.cdn.price_class,
            web_acl_arn=config.cdn.web_acl_arn,
        )
        # Every function may resolve a stored key to its URL (no permission needed), so every one gets the base.
        cdn_env = {CDN_BASE_URL_ENV: self.storage.cdn_base_url} if self.storage.cdn_base_url else {}
        self.messaging = Messaging(self, "Messaging", stage=config.stage, removal_policy=removal)
        self.audit = Audit(self, "Audit", stage=config.stage, removal_policy=removal)
        self.email = Email(
            self,
            "Email",
            stage=config.stage,
            topic=self.messaging.topics["email-events"],
            topic_key=self.messaging.topic_key,
            from_address=config.email.from_address,
            from_name=config.email.from_name,
        )
        self.secrets = Secrets(
            self,
            "Secrets",
            stage=config.stage,
            removal_policy=removal,
            sentry_dsn_secret_arn=config.settings.get("observability", {}).get("sentry_dsn_secret_arn"),
        )
        self.cursor_secret = self.secrets.cursor
        self.functions = Functions(
            self,
            "Functions",
            layer_dir=layer_dir,
            code_dir=code_dir,
            environment={
                "UNDERLAY_STAGE": config.stage,
                "UNDERLAY_SERVICE": SERVICE,
                "UNDERLAY_VERSION": version,
                "UNDERLAY_RELEASE_ID": release_id,
                "UNDERLAY_AUTH__ISSUER": config.auth.issuer,
                "UNDERLAY_AUTH__AUDIENCE": config.auth.audience,
                "UNDERLAY_AUTH__JWKS_URL": config.auth.jwks_url,
                # Layer 2 of the configuration (underlay.config.runtime), validated when the stage file was read.
                STAGE_SETTINGS_ENV: config.settings_json(),
                **cdn_env,
            },
            tracing=config.tracing,
            log_retention=log_retention,
            removal_policy=removal,
            vpc=self.network.vpc,
            subnets=self.network.private_subnets,
            security_group=self.network.functions_sg,
        )
        for spec in declaration.FUNCTIONS:
            fn = self.functions.functions[spec.name]
            self._grant(fn, spec)
            if spec.table_stream:
                self.data.add_stream_consumer(fn, spec.table_stream, function_name=spec.name)
            for queue in spec.consumes:
                self.messaging.add_consumer(fn, queue, timeout_s=spec.timeout_s)
            if spec.topic:
                self.messaging.add_topic_subscriber(fn, spec.topic, function_name=spec.name)
        self._grant_signing_key()

        self.api = Api(
            self,
            "Api",
            stage=config.stage,
            functions=self.functions.functions,
            authorizer_function=self.functions.functions["authorizer"],
            throttle_rate=config.api.throttle_rate,
            throttle_burst=config.api.throttle_burst,
            authorizer_cache_seconds=config.api.authorizer_cache_seconds,
            cors_origins=config.api.cors_origins,
            log_retention=log_retention,
            removal_policy=removal,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            stage=config.stage,
            http_api=self.api.http_api,
            functions=self.functions.functions,
            api_functions=sorted({r.function for r in declaration.ROUTES}),
            # ElastiCache names a replication group's nodes <group id>-001, -002, ...
            cache_cluster_ids=[
                f"{self.cache.group.ref}-{n:03d}" for n in range(1, 2 + config.redis.replicas)
            ],
            queues=self.messaging.queues,
            dlqs={
                **self.messaging.dlqs,
                **{f"{name}-stream": dlq for name, dlq in self.data.stream_dlqs.items()},
                **{f"{name}-topic": dlq for name, dlq in self.messaging.topic_dlqs.items()},
            },
            queue_depth=config.alarms.queue_depth,
            api_5xx_rate_percent=config.alarms.api_5xx_rate_percent,
            api_p95_latency_ms=config.alarms.api_p95_latency_ms,
            alarm_email=config.alarms.email,
            removal_policy=removal,
        )

        for spec in declaration.FUNCTIONS:
            if is_job_worker(
                spec
            ):  # a job worker runs health.snapshot, which alerts after a streak of failures
                self.monitoring.grant_health_alerts(self.functions.functions[spec.name])

        CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the HTTP API")
        CfnOutput(self, "EventBusName", value=self.messaging.bus.event_bus_name)
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        if self.storage.cdn_base_url:
            CfnOutput(
                self, "StorageCdnUrl", value=self.storage.cdn_base_url, description="Serves public/ keys"
            )

    def _grant(self, fn: lambda_.Function, spec: declaration.Function) -> None:
        """Least privilege from the declaration: each grant adds its permissions and the physical name."""
        if spec.reads_config and not any(g.kind == "table" and g.name == "config" for g in spec.grants):
            self.data.grant_table(fn, "config", "read")  # runtime settings and the version stamp
            fn.add_environment(declaration.env_name("table", "config"), self.data.tables["config"].table_name)
        if spec.reads_config:
            self.secrets.grant_sentry(fn)  # the DSN's ARN reaches it in the stage settings
        if any(r.function == spec.name for r in declaration.ROUTES):
            # Signs list cursors (underlay.pagination); generated here, read through Powertools Parameters.
            fn.add_environment("UNDERLAY_HTTP__CURSOR_SECRET_ARN", self.cursor_secret.secret_arn)
            self.cursor_secret.grant_read(fn)
        if spec.needs_redis:
            fn.add_environment("UNDERLAY_REDIS__HOST", self.cache.host)
            fn.add_environment("UNDERLAY_REDIS__PORT", self.cache.port)
            fn.add_environment("UNDERLAY_REDIS__TLS", "true")
            fn.add_environment("UNDERLAY_REDIS__AUTH_SECRET_ARN", self.cache.secret.secret_arn)
            self.cache.secret.grant_read(fn)
        for grant in spec.grants:
            if grant.kind == "table":
                for name in self._names(grant, self.data.tables):
                    self.data.grant_table(fn, name, grant.access)
                    fn.add_environment(declaration.env_name("table", name), self.data.tables[name].table_name)
            elif grant.kind == "bucket":
                for name in self._names(grant, self.data.buckets):
                    self.data.grant_bucket(fn, name, grant.access)
                    fn.add_environment(
                        declaration.env_name("bucket", name), self.data.buckets[name].bucket_name
                    )
            elif grant.kind == "queue":
                for name in self._names(grant, self.messaging.queues):
                    self.messaging.grant_queue(fn, name, grant.access)
                    fn.add_environment(
                        declaration.env_name("queue", name), self.messaging.queues[name].queue_url
                    )
                    fn.add_environment(
                        declaration.env_name("queue", f"{name}_dlq"), self.messaging.dlqs[name].queue_url
                    )
            elif grant.kind == "scheduler":  # one-time schedules, in the jobs schedule group only
                self.messaging.grant_job_schedules(fn, grant.access)
            elif grant.kind == "bus":  # there is one, whatever the name says
                self.messaging.grant_bus(fn, grant.access)
                fn.add_environment("UNDERLAY_EVENT_BUS", self.messaging.bus.event_bus_name)
            elif grant.kind == "email":  # SES, from the stage's from-address, through the configuration set
                self.email.grant_send(fn, grant.access)
            else:
                raise ValueError(f"function {spec.name!r}: no grant of kind {grant.kind!r}")

    def _grant_signing_key(self) -> None:
        """Digest signatures: whoever serves the verify route checks them, and the job workers sign them.

        A job worker is a function that consumes a job queue (not a subscription's queue): any of them may run
        the built-in `audit.digest` job (hourly from its schedule, or enqueued at any priority), so each gets the
        digest writer's grants.
        """
        verify = declaration.route("GET /v1/audit-logs/verify")
        if verify is not None:
            self.audit.grant_verify(self.functions.functions[verify.function])
        for spec in declaration.FUNCTIONS:
            if is_job_worker(spec):
                self.audit.grant_digest_writer(
                    self.functions.functions[spec.name], self.data.buckets["audit"]
                )

    @staticmethod
    def _names(grant: declaration.Grant, declared: dict[str, Any]) -> list[str]:
        if grant.name == "*":
            return list(declared)
        if grant.name not in declared:
            raise ValueError(f"grant on undeclared {grant.kind} {grant.name!r}")
        return [grant.name]
