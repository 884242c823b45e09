"""The HTTP API agrees with `declaration.ROUTES`: routes, auth per route, the authorizer, the stage."""

from __future__ import annotations

import json

from underlay import declaration

from tests.infra.conftest import Synth, get_att, ref


def _routes(synth: Synth) -> dict[str, dict]:
    routes = {}
    for route in synth.resources("AWS::ApiGatewayV2::Route").values():
        props = route["Properties"]
        assert props["RouteKey"] not in routes, f"duplicate route {props['RouteKey']}"
        routes[props["RouteKey"]] = props
    return routes


def _integration_function(synth: Synth, route: dict) -> str:
    """The logical ID of the function a route's integration invokes."""
    integration_id = route["Target"]["Fn::Join"][1][1]["Ref"]
    integration = synth.props(integration_id)
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["PayloadFormatVersion"] == "2.0"
    return str(integration["IntegrationUri"]["Fn::GetAtt"][0])


def test_routes_are_exactly_the_declared_ones_plus_default(synth: Synth) -> None:
    assert set(_routes(synth)) == {r.key for r in declaration.ROUTES} | {"$default"}


def test_each_route_invokes_its_declared_function(synth: Synth) -> None:
    routes = _routes(synth)
    functions = synth.stack.functions.functions
    for declared in declaration.ROUTES:
        expected = synth.logical_id(functions[declared.function])
        assert _integration_function(synth, routes[declared.key]) == expected, declared.key
    default_fn = synth.logical_id(functions[declaration.DEFAULT_ROUTE_FUNCTION])
    assert _integration_function(synth, routes["$default"]) == default_fn


def test_public_routes_have_no_authorizer_and_scoped_routes_use_it(synth: Synth) -> None:
    routes = _routes(synth)
    authorizer_id = synth.logical_id(synth.stack.api.http_api.node.find_child("JwtAuthorizer"))
    for declared in declaration.ROUTES:
        props = routes[declared.key]
        if declared.public:
            assert props["AuthorizationType"] == "NONE", declared.key
            assert "AuthorizerId" not in props, declared.key
        else:
            assert props["AuthorizationType"] == "CUSTOM", declared.key
            assert props["AuthorizerId"] == ref(authorizer_id), declared.key
    assert routes["$default"]["AuthorizationType"] == "NONE"
    assert any(not r.public for r in declaration.ROUTES) and any(r.public for r in declaration.ROUTES)


def test_authorizer_is_a_cached_simple_request_authorizer_keyed_by_token_and_route(synth: Synth) -> None:
    (authorizer,) = synth.resources("AWS::ApiGatewayV2::Authorizer").values()
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "REQUEST"
    assert props["EnableSimpleResponses"] is True
    assert props["AuthorizerPayloadFormatVersion"] == "2.0"
    assert props["IdentitySource"] == ["$request.header.Authorization", "$context.routeKey"]
    assert props["AuthorizerResultTtlInSeconds"] == synth.config.api.authorizer_cache_seconds
    authorizer_fn = synth.logical_id(synth.stack.functions.functions["authorizer"])
    assert get_att(authorizer_fn) in props["AuthorizerUri"]["Fn::Join"][1]


def test_stage_throttles_and_writes_json_access_logs(synth: Synth) -> None:
    (stage,) = synth.resources("AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "$default" and props["AutoDeploy"] is True
    assert props["DefaultRouteSettings"]["ThrottlingRateLimit"] == synth.config.api.throttle_rate
    assert props["DefaultRouteSettings"]["ThrottlingBurstLimit"] == synth.config.api.throttle_burst
    access = props["AccessLogSettings"]
    assert access["DestinationArn"] == get_att(synth.logical_id(synth.stack.api.access_logs))
    fields = json.loads(access["Format"])
    for field in (
        "requestId",
        "routeKey",
        "status",
        "latency",
        "ip",
        "userAgent",
        "integrationError",
        "authorizerError",
    ):
        assert fields[field].startswith("$context."), field
    log_group = synth.props(synth.logical_id(synth.stack.api.access_logs))
    assert log_group["RetentionInDays"] == synth.config.log_retention_days


def test_cors_origins_come_from_the_stage_config(synth: Synth) -> None:
    (api,) = synth.resources("AWS::ApiGatewayV2::Api").values()
    cors = api["Properties"]["CorsConfiguration"]
    assert cors["AllowOrigins"] == synth.config.api.cors_origins
    assert "authorization" in cors["AllowHeaders"]


def test_the_api_url_is_an_output(synth: Synth) -> None:
    assert "ApiUrl" in synth.template["Outputs"]
