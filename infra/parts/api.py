from __future__ import annotations

import json

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from underlay import declaration

from infra.stage_config import StageConfig

ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "latency": "$context.responseLatency",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "integrationError": "$context.integrationErrorMessage",
    "authorizerError": "$context.authorizer.error",
}


class Api(Construct):
    """The HTTP API: one route per declared route, the Lambda REQUEST authorizer, `$default` for problem+json."""

    def __init__(
        self, scope: Construct, id: str, *, config: StageConfig, functions: dict[str, lambda_.IFunction]
    ) -> None:
        super().__init__(scope, id)
        self.api = apigw.HttpApi(
            self,
            "HttpApi",
            create_default_stage=False,
            cors_preflight=apigw.CorsPreflightOptions(
                allow_origins=config.api.cors_origins,
                allow_methods=[apigw.CorsHttpMethod.ANY],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "x-correlation-id",
                    "x-request-id",
                    "traceparent",
                ],
                max_age=Duration.minutes(10),
            )
            if config.api.cors_origins
            else None,
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH)
        self.stage = apigw.HttpStage(
            self,
            "Stage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(
                rate_limit=config.api.throttle_rate, burst_limit=config.api.throttle_burst
            ),
        )
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn,
            format=json.dumps(ACCESS_LOG_FORMAT),
        )
        self.authorizer = authorizers.HttpLambdaAuthorizer(
            "Jwt",
            functions["authorizer"],
            response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
            identity_source=["$request.header.Authorization", "$context.routeKey"],
            results_cache_ttl=Duration.seconds(config.api.authorizer_cache_seconds),
        )
        integrations_by_fn = {
            name: integrations.HttpLambdaIntegration(f"{name}-integration", fn)
            for name, fn in functions.items()
        }
        for route in declaration.ROUTES:
            apigw.HttpRoute(
                self,
                f"Route-{route.method}-{route.path}",
                http_api=self.api,
                route_key=apigw.HttpRouteKey.with_(route.path, apigw.HttpMethod(route.method)),
                integration=integrations_by_fn[route.function],
                authorizer=None if route.public else self.authorizer,
            )
        apigw.HttpRoute(
            self,
            "Route-default",
            http_api=self.api,
            route_key=apigw.HttpRouteKey.DEFAULT,
            integration=integrations_by_fn[declaration.DEFAULT_ROUTE_FUNCTION],
        )
        self.url = self.stage.url
