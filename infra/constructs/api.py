"""The HTTP API, derived route by route from `declaration.ROUTES`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import jsii
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw_v1
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from underlay import declaration

from infra.constructs import acknowledge

# One JSON object per request; the fields an on-call engineer filters by first.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "latency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "integrationError": "$context.integrationErrorMessage",
    "authorizerError": "$context.authorizer.error",
}
IDENTITY_SOURCES = ["$request.header.Authorization", "$context.routeKey"]
CORS_HEADERS = [
    "authorization",
    "content-type",
    "if-match",
    "x-correlation-id",
    "x-request-id",
    "traceparent",
]


@jsii.implements(apigw.IAccessLogSettings)
class _AccessLogSettings:
    """`IAccessLogSettings` is a jsii interface, not a struct, so Python needs a class to pass one."""

    def __init__(self, *, destination: apigw.IAccessLogDestination, format: apigw_v1.AccessLogFormat) -> None:
        self._destination = destination
        self._format = format

    @property
    def destination(self) -> apigw.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw_v1.AccessLogFormat:
        return self._format


def _construct_id(route_key: str) -> str:
    return "Route-" + re.sub(r"[^A-Za-z0-9]+", "-", route_key).strip("-")


class Api(Construct):
    """An HTTP API with one route per declared route, a Lambda REQUEST authorizer and a `$default` route.

    Routes with a scope go through the authorizer; public ones do not. Its identity sources include
    `$context.routeKey`, so a cached decision (keyed by token and route) never crosses routes with different
    scopes. `$default` catches every request that matches no route and sends it to the app, which answers
    404/405 as problem+json instead of API Gateway's own `{"message":"Not Found"}`.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        functions: Mapping[str, lambda_.IFunction],
        authorizer_function: lambda_.IFunction,
        throttle_rate: float,
        throttle_burst: int,
        authorizer_cache_seconds: int,
        cors_origins: list[str],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id)
        self.http_api = apigw.HttpApi(
            self,
            "HttpApi",
            api_name=f"underlay-{stage}",
            description=f"Underlay {stage}",
            create_default_stage=False,
            cors_preflight=apigw.CorsPreflightOptions(
                allow_origins=cors_origins,
                allow_methods=[apigw.CorsHttpMethod.ANY],
                allow_headers=CORS_HEADERS,
                expose_headers=["x-correlation-id", "retry-after", "www-authenticate"],
                max_age=Duration.minutes(10),
            )
            if cors_origins
            else None,
        )
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=log_retention, removal_policy=removal_policy
        )
        self.stage = apigw.HttpStage(
            self,
            "Stage",
            http_api=self.http_api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(rate_limit=throttle_rate, burst_limit=throttle_burst),
            access_log_settings=_AccessLogSettings(
                destination=apigw.LogGroupLogDestination(self.access_logs),
                format=apigw_v1.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT)),
            ),
        )
        self.authorizer = authorizers.HttpLambdaAuthorizer(
            "JwtAuthorizer",
            authorizer_function,
            authorizer_name="jwt",
            response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
            identity_source=IDENTITY_SOURCES,
            results_cache_ttl=Duration.seconds(authorizer_cache_seconds),
        )
        # One integration per function, shared by all of its routes.
        self.integrations = {
            name: integrations.HttpLambdaIntegration(
                f"{name}-integration", fn, payload_format_version=apigw.PayloadFormatVersion.VERSION_2_0
            )
            for name, fn in functions.items()
            if name == declaration.DEFAULT_ROUTE_FUNCTION or declaration.routes_for(name)
        }
        self.routes: dict[str, apigw.HttpRoute] = {}
        for route in declaration.ROUTES:
            created = apigw.HttpRoute(
                self,
                _construct_id(route.key),
                http_api=self.http_api,
                route_key=apigw.HttpRouteKey.with_(route.path, apigw.HttpMethod(route.method)),
                integration=self.integrations[route.function],
                authorizer=None if route.public else self.authorizer,
            )
            if route.public:
                acknowledge(
                    created,
                    "AwsSolutions-APIG4",
                    f"{route.key} is public by declaration (scope=None): {route.summary}.",
                )
            self.routes[route.key] = created
        default = apigw.HttpRoute(
            self,
            "Route-default",
            http_api=self.http_api,
            route_key=apigw.HttpRouteKey.DEFAULT,
            integration=self.integrations[declaration.DEFAULT_ROUTE_FUNCTION],
        )
        acknowledge(
            default,
            "AwsSolutions-APIG4",
            "$default only receives requests that match no declared route; the app answers them with a "
            "404/405 problem+json and serves nothing else on it.",
        )
        self.routes["$default"] = default
        self.url = self.stage.url
