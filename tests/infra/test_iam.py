"""Least privilege, derived from each function's declared grants, and an append-only audit table."""

from __future__ import annotations

import json
from typing import Any

import pytest
from underlay import declaration

from infra.constructs.data import APPEND_ONLY_TABLES, ITEM_MUTATIONS, table_write_actions
from tests.infra.conftest import Synth, as_list, get_att

WILDCARD_ACTIONS = {"*", "dynamodb:*", "s3:*", "sqs:*", "kms:*", "iam:*", "events:*", "secretsmanager:*"}


def _all_statements(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    """(owner logical ID, statement) for every identity policy statement in the template."""
    found = []
    for logical_id, policy in synth.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            found.append((logical_id, statement))
    for logical_id, role in synth.resources("AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            for statement in inline["PolicyDocument"]["Statement"]:
                found.append((logical_id, statement))
    return found


def _role_statements(synth: Synth, function: str) -> list[dict[str, Any]]:
    fn = synth.props(synth.logical_id(synth.stack.functions.functions[function]))
    role_id = fn["Role"]["Fn::GetAtt"][0]
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _allowed(statements: list[dict[str, Any]], prefix: str) -> dict[str, set[str]]:
    """action -> the resources (as JSON) it is allowed on, for actions of one service."""
    allowed: dict[str, set[str]] = {}
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        for action in as_list(statement["Action"]):
            if action.startswith(prefix):
                allowed.setdefault(action, set()).update(
                    json.dumps(r, sort_keys=True) for r in as_list(statement["Resource"])
                )
    return allowed


def _arn(synth: Synth, construct: Any) -> str:
    return json.dumps(get_att(synth.logical_id(construct)), sort_keys=True)


def test_health_may_only_describe_tables_and_read_its_history(synth: Synth) -> None:
    tables = synth.stack.data.tables
    dynamodb = _allowed(_role_statements(synth, "health"), "dynamodb:")
    described = {r for r in dynamodb.pop("dynamodb:DescribeTable") if "/index/*" not in r}  # CDK adds GSI ARNs
    assert described == {_arn(synth, t) for t in tables.values()}
    history = {_arn(synth, tables["health_history"])}
    assert dynamodb, "health must be able to read health_history"
    for action, resources in dynamodb.items():
        assert resources == history, f"{action} granted beyond health_history: {resources}"
        assert action not in ITEM_MUTATIONS and action not in {"dynamodb:PutItem"}


def test_health_may_only_head_buckets_and_read_queue_attributes(synth: Synth) -> None:
    statements = _role_statements(synth, "health")
    assert _allowed(statements, "s3:") == {
        "s3:ListBucket": {_arn(synth, b) for b in synth.stack.data.buckets.values()}
    }
    messaging = synth.stack.messaging
    queues = [*messaging.queues.values(), *messaging.dlqs.values()]
    assert _allowed(statements, "sqs:") == {"sqs:GetQueueAttributes": {_arn(synth, q) for q in queues}}
    assert _allowed(statements, "secretsmanager:")["secretsmanager:GetSecretValue"] == {
        json.dumps({"Ref": synth.logical_id(synth.stack.cache.secret)})
    }


def test_the_authorizer_gets_no_data_access(synth: Synth) -> None:
    statements = _role_statements(synth, "authorizer")
    actions = {a for s in statements for a in as_list(s["Action"])}
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents"} | (
        {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} if synth.config.tracing else set()
    )


def test_vpc_functions_can_create_their_network_interfaces(synth: Synth) -> None:
    for spec in declaration.FUNCTIONS:
        fn = synth.props(synth.logical_id(synth.stack.functions.functions[spec.name]))
        role = synth.props(fn["Role"]["Fn::GetAtt"][0])
        managed = json.dumps(role.get("ManagedPolicyArns", []))
        assert ("AWSLambdaVPCAccessExecutionRole" in managed) == spec.needs_redis, spec.name
        assert "AWSLambdaBasicExecutionRole" not in managed  # logs only to its own group instead


def test_no_statement_can_change_or_delete_audit_entries(synth: Synth) -> None:
    audit = synth.logical_id(synth.stack.data.tables["audit"])
    for owner, statement in _all_statements(synth):
        if statement["Effect"] != "Allow":
            continue
        actions = set(as_list(statement["Action"]))
        resources = json.dumps(statement["Resource"])
        if audit in resources or statement["Resource"] == "*":
            assert not actions & ITEM_MUTATIONS, f"{owner} may {actions & ITEM_MUTATIONS} on the audit table"


def test_no_wildcard_service_actions(synth: Synth) -> None:
    for owner, statement in _all_statements(synth):
        if statement["Effect"] == "Allow":
            assert not set(as_list(statement["Action"])) & WILDCARD_ACTIONS, owner


@pytest.mark.parametrize("access", ["write", "read_write", "put_only"])
def test_append_only_tables_only_ever_get_put(access: declaration.Access) -> None:
    assert {"audit"} <= APPEND_ONLY_TABLES
    for table in APPEND_ONLY_TABLES:
        actions = set(table_write_actions(table, access))
        assert "dynamodb:PutItem" in actions
        assert not actions & ITEM_MUTATIONS
    assert "dynamodb:UpdateItem" in table_write_actions("flags", "write")
