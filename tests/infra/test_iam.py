"""Least privilege, derived from each function's declared grants, and an append-only audit table."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest
from underlay import declaration

from infra.constructs.data import (
    APPEND_ENTRIES,
    APPEND_ONLY_TABLES,
    ITEM_MUTATIONS,
    WRITE_ITEMS,
    table_write_actions,
)
from tests.infra.conftest import (
    Synth,
    all_statements,
    allowed,
    arn,
    as_list,
    beyond_config,
    index_arns,
    role_statements,
)

WILDCARD_ACTIONS = {"*", "dynamodb:*", "s3:*", "sqs:*", "kms:*", "iam:*", "events:*", "secretsmanager:*"}


def test_health_may_only_describe_tables_and_read_its_history(synth: Synth) -> None:
    tables = synth.stack.data.tables
    dynamodb = allowed(role_statements(synth, "health"), "dynamodb:")
    described = dynamodb.pop("dynamodb:DescribeTable")
    dynamodb = beyond_config(synth, dynamodb)
    assert described == {arn(synth, t) for t in tables.values()}  # the tables, not their index ARNs
    history = {arn(synth, tables["health_history"])}
    assert dynamodb, "health must be able to read health_history"
    for action, resources in dynamodb.items():
        assert resources == history, f"{action} granted beyond health_history: {resources}"
        assert action not in ITEM_MUTATIONS and action not in {"dynamodb:PutItem"}


def test_health_may_only_head_buckets_and_read_queue_attributes(synth: Synth) -> None:
    statements = role_statements(synth, "health")
    assert allowed(statements, "s3:") == {
        "s3:ListBucket": {arn(synth, b) for b in synth.stack.data.buckets.values()}
    }
    messaging = synth.stack.messaging
    queues = [*messaging.queues.values(), *messaging.dlqs.values()]
    assert allowed(statements, "sqs:") == {"sqs:GetQueueAttributes": {arn(synth, q) for q in queues}}
    assert allowed(statements, "secretsmanager:")["secretsmanager:GetSecretValue"] == {
        json.dumps({"Ref": synth.logical_id(synth.stack.cache.secret)}),
        json.dumps({"Ref": synth.logical_id(synth.stack.secrets.cursor)}),
    }


def test_the_authorizer_gets_no_data_access(synth: Synth) -> None:
    statements = role_statements(synth, "authorizer")
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


def _reaches(resource: Any, table_id: str) -> bool:
    """Whether a statement resource covers the table: names it, or is a wildcard that could match it."""
    if isinstance(resource, str):
        return resource == "*" or (":dynamodb:" in resource and "*" in resource)
    return table_id in json.dumps(resource)


def _grants_any(patterns: list[str], actions: frozenset[str]) -> set[str]:
    """The actions in `actions` that some action pattern (`dynamodb:Update*`, `*`) allows."""
    return {a for a in actions for p in patterns if fnmatchcase(a.lower(), p.lower())}


def _role_of(synth: Synth, function: str) -> dict[str, str]:
    return {
        "Ref": synth.props(synth.logical_id(synth.stack.functions.functions[function]))["Role"]["Fn::GetAtt"][
            0
        ]
    }


def test_no_role_may_change_or_delete_audit_entries(synth: Synth) -> None:
    audit = synth.logical_id(synth.stack.data.tables["audit"])
    checked: list[dict[str, str]] = []
    for owner, statement in all_statements(synth):
        if statement["Effect"] != "Allow":
            continue
        if any(_reaches(r, audit) for r in as_list(statement["Resource"])):
            checked += synth.props(owner).get("Roles", [{"Ref": owner}])
            granted = _grants_any(as_list(statement["Action"]), ITEM_MUTATIONS)
            assert not granted, f"{owner} may {sorted(granted)} on the audit table"
    # Every function declared with a grant on the audit table was among those checked (the worker writes with
    # read_write, which must still come out as put-only).
    writers = {
        f.name for f in declaration.FUNCTIONS for g in f.grants if (g.kind, g.name) in {("table", "audit")}
    }
    assert {"audit", "cache", "admin", "jobs", "worker"} <= writers
    for name in writers:
        assert _role_of(synth, name) in checked, f"no grant of {name} on the audit table was checked"


def test_the_mutation_check_would_catch_wildcards() -> None:
    assert _grants_any(["dynamodb:Update*"], ITEM_MUTATIONS) == {"dynamodb:UpdateItem"}
    assert _grants_any(["*"], ITEM_MUTATIONS) == ITEM_MUTATIONS
    assert _reaches("arn:aws:dynamodb:eu-west-1:1:table/*", "X") and not _reaches("arn:aws:s3:::b/*", "X")


@pytest.mark.parametrize("function", ["cache", "admin"])
def test_appenders_get_exactly_the_append_actions_on_the_audit_table(synth: Synth, function: str) -> None:
    data = synth.stack.data
    assert declaration.Grant("table", "audit", "append") in declaration.function(function).grants
    statements = role_statements(synth, function)
    dynamodb = beyond_config(synth, allowed(statements, "dynamodb:"))
    if function == "admin":  # it also reads (its stats count flags, jobs and audit entries): see below
        dynamodb = {a: r for a, r in dynamodb.items() if a in APPEND_ENTRIES}
        dynamodb = {a: r & {arn(synth, data.tables["audit"])} for a, r in dynamodb.items()}
    assert dynamodb == {a: {arn(synth, data.tables["audit"])} for a in APPEND_ENTRIES}
    assert set(APPEND_ENTRIES) == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"}
    kms = allowed(statements, "kms:")
    for action in ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"):
        assert kms[action] == {arn(synth, data.key)}, action


def test_admin_only_reads_the_tables_its_stats_count_and_only_puts_audit_entries(synth: Synth) -> None:
    tables = synth.stack.data.tables
    counted = {"flags", "jobs", "audit"}
    readable = {arn(synth, tables[t]) for t in counted} | {index_arns(synth, tables[t]) for t in counted}
    readable.add(arn(synth, tables["config"]))  # runtime settings, as every function but the authorizer
    for action, resources in allowed(role_statements(synth, "admin"), "dynamodb:").items():
        assert action not in ITEM_MUTATIONS, action
        if action == "dynamodb:PutItem":
            assert resources == {arn(synth, tables["audit"])}
        else:
            assert resources <= readable, f"{action} on {resources - readable}"
    queues = synth.stack.messaging
    jobs = [q for name, q in queues.queues.items() if name.startswith("jobs-")]
    jobs += [q for name, q in queues.dlqs.items() if name.startswith("jobs-")]
    assert allowed(role_statements(synth, "admin"), "sqs:") == {
        "sqs:GetQueueAttributes": {arn(synth, q) for q in jobs}
    }


def test_the_audit_api_queries_the_table_and_its_indexes_and_only_puts(synth: Synth) -> None:
    audit = synth.stack.data.tables["audit"]
    dynamodb = beyond_config(synth, allowed(role_statements(synth, "audit"), "dynamodb:"))
    assert dynamodb["dynamodb:Query"] == {arn(synth, audit), index_arns(synth, audit)}
    assert dynamodb["dynamodb:GetItem"] >= {arn(synth, audit)}
    assert dynamodb["dynamodb:PutItem"] == {arn(synth, audit)}
    assert dynamodb["dynamodb:ConditionCheckItem"] >= {arn(synth, audit)}
    assert not set(dynamodb) & ITEM_MUTATIONS
    reached = {r for resources in dynamodb.values() for r in resources}
    assert reached == {arn(synth, audit), index_arns(synth, audit)}, "the audit API reaches another table"


def test_the_archiver_reads_the_stream_and_puts_archives_and_nothing_else(synth: Synth) -> None:
    data = synth.stack.data
    audit, bucket = data.tables["audit"], data.buckets["audit"]
    statements = role_statements(synth, "audit_archive")
    stream = arn(synth, audit, "StreamArn")
    dynamodb = beyond_config(synth, allowed(statements, "dynamodb:"))
    for action in ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"):
        assert dynamodb.pop(action) == {stream}, action
    assert set(dynamodb) <= {"dynamodb:ListStreams"}, f"item access on a table: {dynamodb}"
    s3 = allowed(statements, "s3:")
    objects = json.dumps({"Fn::Join": ["", [json.loads(arn(synth, bucket)), "/*"]]}, sort_keys=True)
    assert s3["s3:PutObject"] == {objects}
    assert all(a.startswith(("s3:Put", "s3:Abort")) for a in s3), f"beyond put: {sorted(s3)}"


def test_no_wildcard_service_actions(synth: Synth) -> None:
    for owner, statement in all_statements(synth):
        if statement["Effect"] == "Allow":
            assert not set(as_list(statement["Action"])) & WILDCARD_ACTIONS, owner


@pytest.mark.parametrize("access", ["write", "read_write", "put_only", "append"])
def test_append_only_tables_only_ever_get_put(access: declaration.Access) -> None:
    assert {"audit"} <= APPEND_ONLY_TABLES
    for table in APPEND_ONLY_TABLES:
        actions = set(table_write_actions(table, access))
        assert "dynamodb:PutItem" in actions
        assert not actions & ITEM_MUTATIONS
    assert "dynamodb:UpdateItem" in table_write_actions("flags", "write")
    assert table_write_actions("flags", "append") == APPEND_ENTRIES


@pytest.mark.parametrize("function", ["flags", "worker"])
def test_flag_users_query_the_flags_table_and_its_indexes_and_write_its_items(
    synth: Synth, function: str
) -> None:
    """The flags API and the stale scan list flags and segments by kind (the `by_kind` index), never a Scan of
    another table; writes go to the table's items only."""
    assert declaration.Grant("table", "flags", "read_write") in declaration.function(function).grants
    assert "by_kind" in {i.name for t in declaration.TABLES if t.name == "flags" for i in t.indexes}
    flags = synth.stack.data.tables["flags"]
    index = synth.props(synth.logical_id(flags))["GlobalSecondaryIndexes"]
    assert {i["IndexName"] for i in index} == {"by_kind"}
    dynamodb = allowed(role_statements(synth, function), "dynamodb:")
    table, indexes = arn(synth, flags), index_arns(synth, flags)
    assert {table, indexes} <= dynamodb["dynamodb:Query"]
    for action in WRITE_ITEMS:
        assert table in dynamodb[action], action
    for action in ITEM_MUTATIONS & set(WRITE_ITEMS) | {"dynamodb:PutItem"}:
        assert indexes not in dynamodb[action], f"{action} on the flags indexes"


def test_every_function_but_the_authorizer_reads_the_config_table_and_only_config_writes_it(
    synth: Synth,
) -> None:
    table = arn(synth, synth.stack.data.tables["config"])
    for spec in declaration.FUNCTIONS:
        dynamodb = allowed(role_statements(synth, spec.name), "dynamodb:")
        reads = {a for a, resources in dynamodb.items() if table in resources}
        if not spec.reads_config:
            assert not reads, spec.name
            continue
        assert {"dynamodb:Query", "dynamodb:GetItem"} <= reads, spec.name
        writes = reads & (ITEM_MUTATIONS | {"dynamodb:PutItem", "dynamodb:UpdateItem"})
        assert bool(writes) == (spec.name == "config"), (spec.name, writes)


def test_only_route_serving_functions_read_the_cursor_key(synth: Synth) -> None:
    secret = json.dumps({"Ref": synth.logical_id(synth.stack.secrets.cursor)})
    serving = {r.function for r in declaration.ROUTES}
    for spec in declaration.FUNCTIONS:
        secrets = allowed(role_statements(synth, spec.name), "secretsmanager:").get(
            "secretsmanager:GetSecretValue", set()
        )
        assert (secret in secrets) == (spec.name in serving), spec.name
