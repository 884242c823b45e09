"""CDK assertions on one synth per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from underlay import declaration

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@pytest.fixture(scope="session")
def template() -> Any:
    from aws_cdk.assertions import Template

    from infra.app import build_app

    _, stack = build_app(stage="dev")
    return Template.from_stack(stack)  # type: ignore[arg-type]


def test_routes_match_the_declaration(template: Any) -> None:
    routes = template.find_resources("AWS::ApiGatewayV2::Route")
    keys = {r["Properties"]["RouteKey"] for r in routes.values()}
    assert keys == {r.key for r in declaration.ROUTES} | {"$default"}
    for route in routes.values():
        props = route["Properties"]
        declared = declaration.route(props["RouteKey"])
        expected = "NONE" if declared is None or declared.public else "CUSTOM"
        assert props.get("AuthorizationType", "NONE") == expected, props["RouteKey"]


def test_authorizer_identity_sources_and_simple_responses(template: Any) -> None:
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Authorizer",
        {
            "AuthorizerType": "REQUEST",
            "EnableSimpleResponses": True,
            "AuthorizerPayloadFormatVersion": "2.0",
            "IdentitySource": ["$request.header.Authorization", "$context.routeKey"],
        },
    )


def test_tables_are_encrypted_with_pitr(template: Any) -> None:
    tables = template.find_resources("AWS::DynamoDB::Table")
    assert len(tables) == len(declaration.TABLES)
    for table in tables.values():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert (
            props["SSESpecification"]["SSEEnabled"] is True and props["SSESpecification"]["SSEType"] == "KMS"
        )


def test_audit_bucket_has_object_lock_in_compliance_mode(template: Any) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "ObjectLockEnabled": True,
            "ObjectLockConfiguration": {
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        },
    )
    for bucket in template.find_resources("AWS::S3::Bucket").values():
        block = bucket["Properties"]["PublicAccessBlockConfiguration"]
        assert all(
            block[k]
            for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        )


def test_queues_have_dlqs_and_six_times_visibility(template: Any) -> None:
    for spec in declaration.QUEUES:
        template.has_resource_properties(
            "AWS::SQS::Queue",
            {
                "VisibilityTimeout": spec.visibility_timeout_s,
                "RedrivePolicy": {"maxReceiveCount": spec.max_receive_count},
            },
        )


def test_functions_are_arm64_python312_and_only_redis_users_in_the_vpc(template: Any) -> None:
    functions = {
        f["Properties"]["Handler"]: f["Properties"]
        for f in template.find_resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler", "").startswith("functions.")
    }
    assert set(functions) == {f.handler for f in declaration.FUNCTIONS}
    for spec in declaration.FUNCTIONS:
        props = functions[spec.handler]
        assert props["Runtime"] == "python3.12" and props["Architectures"] == ["arm64"]
        assert ("VpcConfig" in props) == spec.needs_redis


def test_cache_is_encrypted_with_auth(template: Any) -> None:
    template.has_resource_properties(
        "AWS::ElastiCache::ReplicationGroup",
        {"TransitEncryptionEnabled": True, "AtRestEncryptionEnabled": True, "Engine": "valkey"},
    )


def test_no_wildcard_actions_and_no_audit_mutation(template: Any) -> None:
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not any(a in ("*", "dynamodb:*", "s3:*") for a in actions)
            assert "dynamodb:UpdateItem" not in actions and "dynamodb:DeleteItem" not in actions


def test_alarms_cover_dlqs_and_the_api(template: Any) -> None:
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    descriptions = [a["Properties"].get("AlarmDescription", "") for a in alarms.values()]
    assert sum("dead-letter" in d for d in descriptions) == len(declaration.QUEUES)
    assert any("5xx" in d for d in descriptions) and any("p95" in d for d in descriptions)
    assert any("throttled" in d for d in descriptions)
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_invalid_stage_config_names_every_bad_field(tmp_path: Path) -> None:
    from infra.stage_config import StageConfigError, load_stage_config

    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"stage": "moon", "api": {"throttle_rate": -1, "throttle_burst": 0, "authorizer_cache_seconds": 1}}'
    )
    with pytest.raises(StageConfigError) as caught:
        load_stage_config(bad)
    message = str(caught.value)
    for field in ("stage", "api.throttle_rate", "api.throttle_burst", "auth", "log_retention_days"):
        assert f"  {field}:" in message
