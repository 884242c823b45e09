"""Functions: one per declaration, the runtime and layout the layer is built for, placement and settings."""

from __future__ import annotations

import json

from underlay import declaration

from tests.infra.conftest import Synth, get_att, ref

BASE_ENV = {
    "UNDERLAY_STAGE",
    "UNDERLAY_SERVICE",
    "UNDERLAY_VERSION",
    "POWERTOOLS_SERVICE_NAME",
    "UNDERLAY_STAGE_SETTINGS",
    "UNDERLAY_AUTH__ISSUER",
    "UNDERLAY_AUTH__AUDIENCE",
    "UNDERLAY_AUTH__JWKS_URL",
}
REDIS_ENV = {
    "UNDERLAY_REDIS__HOST",
    "UNDERLAY_REDIS__PORT",
    "UNDERLAY_REDIS__TLS",
    "UNDERLAY_REDIS__AUTH_SECRET_ARN",
}


def _function(synth: Synth, name: str) -> dict:
    return synth.props(synth.logical_id(synth.stack.functions.functions[name]))


def test_one_function_per_declaration_with_its_handler_runtime_and_size(synth: Synth) -> None:
    functions = synth.resources("AWS::Lambda::Function")
    assert len(functions) == len(declaration.FUNCTIONS)
    layer = ref(synth.logical_id(synth.stack.functions.layer))
    for spec in declaration.FUNCTIONS:
        props = _function(synth, spec.name)
        assert props["Handler"] == spec.handler == f"functions.{spec.name}.app.handler"
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["MemorySize"] == spec.memory_mb
        assert props["Timeout"] == spec.timeout_s
        assert props["Layers"] == [layer]
        assert props["LoggingConfig"]["LogFormat"] == "JSON"


def test_every_function_ships_the_same_code_asset(synth: Synth) -> None:
    keys = {json.dumps(_function(synth, f.name)["Code"], sort_keys=True) for f in declaration.FUNCTIONS}
    assert len(keys) == 1


def test_redis_users_are_in_the_private_subnets_and_the_authorizer_is_not(synth: Synth) -> None:
    sg = get_att(synth.logical_id(synth.stack.network.functions_sg), "GroupId")
    private = {
        json.dumps(ref(synth.logical_id(s.node.default_child or s)))
        for s in synth.stack.network.vpc.select_subnets(
            subnet_type=synth.stack.network.private_subnets.subnet_type
        ).subnets
    }
    assert any(f.needs_redis for f in declaration.FUNCTIONS)
    for spec in declaration.FUNCTIONS:
        props = _function(synth, spec.name)
        if spec.needs_redis:
            assert props["VpcConfig"]["SecurityGroupIds"] == [sg], spec.name
            assert {json.dumps(s) for s in props["VpcConfig"]["SubnetIds"]} == private, spec.name
        else:
            assert "VpcConfig" not in props, spec.name
    assert "VpcConfig" not in _function(synth, "authorizer")


def test_every_function_gets_the_stage_settings(synth: Synth) -> None:
    config = synth.config
    for spec in declaration.FUNCTIONS:
        env = _function(synth, spec.name)["Environment"]["Variables"]
        assert set(env) >= BASE_ENV, spec.name
        assert env["UNDERLAY_STAGE"] == config.stage
        assert env["UNDERLAY_SERVICE"] == "underlay"
        assert env["POWERTOOLS_SERVICE_NAME"] == spec.name
        assert json.loads(env["UNDERLAY_STAGE_SETTINGS"]) == config.settings_document()
        assert env["UNDERLAY_AUTH__ISSUER"] == config.auth.issuer
        assert env["UNDERLAY_AUTH__AUDIENCE"] == config.auth.audience
        assert env["UNDERLAY_AUTH__JWKS_URL"] == config.auth.jwks_url
        assert set(env) & REDIS_ENV == (REDIS_ENV if spec.needs_redis else set()), spec.name


def test_redis_settings_point_at_the_cache_over_tls(synth: Synth) -> None:
    group = synth.logical_id(synth.stack.cache.group)
    secret = synth.logical_id(synth.stack.cache.secret)
    for spec in declaration.FUNCTIONS:
        if not spec.needs_redis:
            continue
        env = _function(synth, spec.name)["Environment"]["Variables"]
        assert env["UNDERLAY_REDIS__HOST"] == get_att(group, "PrimaryEndPoint.Address")
        assert env["UNDERLAY_REDIS__PORT"] == get_att(group, "PrimaryEndPoint.Port")
        assert env["UNDERLAY_REDIS__TLS"] == "true"
        assert env["UNDERLAY_REDIS__AUTH_SECRET_ARN"] == ref(secret)


def test_granted_resources_arrive_as_physical_names(synth: Synth) -> None:
    """Every grant in the declaration puts the resource's name (queues: URL, and the DLQ's) in the env."""
    data, messaging = synth.stack.data, synth.stack.messaging
    for spec in declaration.FUNCTIONS:
        env = _function(synth, spec.name)["Environment"]["Variables"]
        expected: dict[str, object] = {}
        if spec.reads_config:
            expected[declaration.env_name("table", "config")] = ref(synth.logical_id(data.tables["config"]))
        for grant in spec.grants:
            if grant.kind == "table":
                for name in data.tables if grant.name == "*" else [grant.name]:
                    expected[declaration.env_name("table", name)] = ref(synth.logical_id(data.tables[name]))
            elif grant.kind == "bucket":
                for name in data.buckets if grant.name == "*" else [grant.name]:
                    expected[declaration.env_name("bucket", name)] = ref(synth.logical_id(data.buckets[name]))
            elif grant.kind == "queue":
                for name in messaging.queues if grant.name == "*" else [grant.name]:
                    expected[declaration.env_name("queue", name)] = ref(
                        synth.logical_id(messaging.queues[name])
                    )
                    expected[declaration.env_name("queue", f"{name}_dlq")] = ref(
                        synth.logical_id(messaging.dlqs[name])
                    )
        resource_env = {
            k: v
            for k, v in env.items()
            if k.startswith(("UNDERLAY_TABLES__", "UNDERLAY_BUCKETS__", "UNDERLAY_QUEUES__"))
        }
        assert resource_env == expected, spec.name
    health = _function(synth, "health")["Environment"]["Variables"]
    assert "UNDERLAY_TABLES__HEALTH_HISTORY" in health and "UNDERLAY_QUEUES__JOBS_HIGH_DLQ" in health


def test_log_groups_keep_the_stage_retention(synth: Synth) -> None:
    for spec in declaration.FUNCTIONS:
        log_group = synth.logical_id(synth.stack.functions.log_groups[spec.name])
        assert _function(synth, spec.name)["LoggingConfig"]["LogGroup"] == ref(log_group)
        assert synth.props(log_group)["RetentionInDays"] == synth.config.log_retention_days


def test_tracing_follows_the_stage(synth: Synth) -> None:
    for spec in declaration.FUNCTIONS:
        mode = _function(synth, spec.name).get("TracingConfig", {}).get("Mode", "PassThrough")
        assert mode == ("Active" if synth.config.tracing else "PassThrough"), spec.name
