"""E-mail on AWS: the SES configuration set publishing bounces and complaints to the `email-events` topic, the
`email_events` function that topic invokes, and the worker's send permission from the stage's from-address."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from underlay import declaration

from infra.constructs.data import WRITE_ITEMS
from infra.constructs.email import (
    CONFIGURATION_SET_ENV,
    FROM_ADDRESS_ENV,
    FROM_NAME_ENV,
    SEND_ACTIONS,
)
from tests.infra.conftest import (
    Synth,
    all_statements,
    allowed,
    arn,
    as_list,
    beyond_config,
    get_att,
    ref,
    role_statements,
)

FROM = "no-reply@mail.example.org"


def _env(synth: Synth, function: str) -> dict[str, Any]:
    fn = synth.props(synth.logical_id(synth.stack.functions.functions[function]))
    return dict(fn["Environment"]["Variables"])


def _topic(synth: Synth) -> Any:
    return synth.stack.messaging.topics["email-events"]


def test_the_configuration_set_publishes_bounces_and_complaints_to_the_topic(synth: Synth) -> None:
    assert "email-events" in declaration.TOPICS
    (config_set,) = synth.resources("AWS::SES::ConfigurationSet").values()
    assert config_set["Properties"]["Name"] == f"{synth.config.stage}-underlay"
    (destination,) = synth.resources("AWS::SES::ConfigurationSetEventDestination").values()
    props = destination["Properties"]["EventDestination"]
    assert sorted(props["MatchingEventTypes"]) == ["bounce", "complaint"]
    assert props["SnsDestination"] == {"TopicARN": ref(synth.logical_id(_topic(synth)))}
    assert props["Enabled"] is True
    policy = synth.logical_id(_topic(synth).node.find_child("Policy"))
    assert policy in destination["DependsOn"]  # SES may publish by the time the destination exists


def test_the_topic_is_encrypted_tls_only_and_only_ses_for_this_configuration_set_may_publish(
    synth: Synth,
) -> None:
    messaging = synth.stack.messaging
    topic = synth.props(synth.logical_id(_topic(synth)))
    assert topic["TopicName"] == f"{synth.config.stage}-underlay-email-events"
    assert topic["KmsMasterKeyId"] == get_att(synth.logical_id(messaging.topic_key))
    statements = [
        s
        for p in synth.resources("AWS::SNS::TopicPolicy").values()
        if ref(synth.logical_id(_topic(synth))) in p["Properties"]["Topics"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert allows, "SES must be allowed to publish"
    for statement in allows:
        assert statement["Principal"] == {"Service": "ses.amazonaws.com"}
        assert as_list(statement["Action"]) == ["sns:Publish"]
        conditions = {k.lower(): v for k, v in statement["Condition"]["StringEquals"].items()}
        assert conditions["aws:sourceaccount"] == {"Ref": "AWS::AccountId"}
        assert ":configuration-set/" in json.dumps(conditions["aws:sourcearn"])


def test_the_topic_key_rotates_and_lets_ses_encrypt(synth: Synth) -> None:
    key = synth.props(synth.logical_id(synth.stack.messaging.topic_key))
    assert key["EnableKeyRotation"] is True
    (ses,) = [
        s for s in key["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": "ses.amazonaws.com"}
    ]
    assert sorted(as_list(ses["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    services = {
        s["Principal"]["Service"]
        for s in key["KeyPolicy"]["Statement"]
        if "Service" in s.get("Principal", {})
    }
    assert services == {"ses.amazonaws.com"}  # no other service may use the topics' key


def test_email_events_is_invoked_by_the_topic_with_an_on_failure_queue(synth: Synth) -> None:
    spec = declaration.function("email_events")
    assert spec.topic == "email-events"
    fn = synth.stack.functions.functions["email_events"]
    fn_id, topic = synth.logical_id(fn), ref(synth.logical_id(_topic(synth)))
    dlq = get_att(synth.logical_id(synth.stack.messaging.topic_dlqs["email_events"]))
    (subscription,) = [
        s["Properties"]
        for s in synth.resources("AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == topic
    ]
    assert subscription["Protocol"] == "lambda"
    assert subscription["Endpoint"] == get_att(fn_id)
    assert subscription["RedrivePolicy"] == {"deadLetterTargetArn": dlq}  # notifications SNS cannot deliver
    (invoke,) = [
        p["Properties"]
        for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == get_att(fn_id)
        and p["Properties"]["Principal"] == "sns.amazonaws.com"
    ]
    assert invoke["SourceArn"] == topic
    (config,) = [
        c["Properties"]
        for c in synth.resources("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == ref(fn_id)
    ]
    assert config["DestinationConfig"] == {"OnFailure": {"Destination": dlq}}  # invocations that keep failing
    assert config["MaximumRetryAttempts"] == 2
    # SNS may send to the DLQ for this topic only.
    (allow,) = [
        s
        for p in synth.resources("AWS::SQS::QueuePolicy").values()
        if {"Ref": dlq["Fn::GetAtt"][0]} in p["Properties"]["Queues"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]
    assert allow["Principal"] == {"Service": "sns.amazonaws.com"}
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": topic}}


def test_email_events_may_write_the_jobs_table_and_nothing_more(synth: Synth) -> None:
    assert declaration.function("email_events").grants == (declaration.Grant("table", "jobs", "write"),)
    data, messaging = synth.stack.data, synth.stack.messaging
    statements = role_statements(synth, "email_events")
    jobs = arn(synth, data.tables["jobs"])
    assert beyond_config(synth, allowed(statements, "dynamodb:")) == {
        action: {jobs} for action in WRITE_ITEMS
    }
    assert allowed(statements, "sqs:")["sqs:SendMessage"] == {
        arn(synth, messaging.topic_dlqs["email_events"])
    }
    services = {a.split(":")[0] for s in statements for a in as_list(s["Action"])}
    # secretsmanager: the Redis AUTH token only (its error groups live in Redis)
    assert services <= {"dynamodb", "kms", "sqs", "logs", "xray", "secretsmanager"}, services
    assert allowed(statements, "secretsmanager:")["secretsmanager:GetSecretValue"] == {
        json.dumps({"Ref": synth.logical_id(synth.stack.cache.secret)})
    }
    assert _env(synth, "email_events")[declaration.env_name("table", "jobs")] == ref(
        synth.logical_id(data.tables["jobs"])
    )


def test_without_a_from_address_nobody_may_send_email(synth: Synth) -> None:
    assert synth.config.email.from_address is None  # dev: no verified identity needed
    for owner, statement in all_statements(synth):
        assert not any(a.startswith("ses:") for a in as_list(statement["Action"])), owner
    env = _env(synth, "worker")
    assert env[CONFIGURATION_SET_ENV] == f"{synth.config.stage}-underlay"
    assert FROM_ADDRESS_ENV not in env and FROM_NAME_ENV not in env
    for spec in declaration.FUNCTIONS:
        if not any(g.kind == "email" for g in spec.grants):
            assert CONFIGURATION_SET_ENV not in _env(synth, spec.name), spec.name


# --- a stage with a from-address ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sending(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    """`Underlay-dev` synthesized once more, with `email.from_address` and `email.from_name` set."""
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from infra.app import build_app
    from infra.stage_config import load_stage_config, stage_file

    raw = json.loads(stage_file("dev").read_text())
    raw["email"] = {"from_address": FROM, "from_name": "Underlay"}
    path = Path(tmp_path_factory.mktemp("stage")) / "dev.json"
    path.write_text(json.dumps(raw))
    _, stack = build_app(
        context={"stage": "dev", "stage_file": str(path)},
        outdir=str(tmp_path_factory.mktemp("cdk.out")),
        nag=False,
    )
    template = Template.from_stack(stack).to_json()
    report = AwsSolutionsChecks().validate_scope(stack)
    violations = [f"{v.rule_name}: {v.description}" for v in report.violations]
    yield Synth(stack, template, violations, load_stage_config(path))


def _ses_arn(kind: str, name: str) -> str:
    return json.dumps(
        {
            "Fn::Join": [
                "",
                [
                    "arn:",
                    {"Ref": "AWS::Partition"},
                    ":ses:",
                    {"Ref": "AWS::Region"},
                    ":",
                    {"Ref": "AWS::AccountId"},
                    f":{kind}/{name}",
                ],
            ]
        },
        sort_keys=True,
    )


def test_the_worker_sends_from_the_configured_address_only(sending: Synth) -> None:
    statements = role_statements(sending, "worker")
    expected = {
        _ses_arn("identity", FROM),
        _ses_arn("identity", "mail.example.org"),
        _ses_arn("configuration-set", "dev-underlay"),
    }
    assert allowed(statements, "ses:") == {action: expected for action in SEND_ACTIONS}
    assert set(SEND_ACTIONS) == {"ses:SendEmail", "ses:SendRawEmail"}
    for statement in statements:
        if any(a.startswith("ses:") for a in as_list(statement["Action"])):
            assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": FROM}}
    env = _env(sending, "worker")
    assert env[FROM_ADDRESS_ENV] == FROM
    assert env[FROM_NAME_ENV] == "Underlay"
    assert env[CONFIGURATION_SET_ENV] == "dev-underlay"
    assert (FROM_ADDRESS_ENV, FROM_NAME_ENV, CONFIGURATION_SET_ENV) == (
        "UNDERLAY_EMAIL__FROM_ADDRESS",  # EmailSettings.from_address
        "UNDERLAY_EMAIL__FROM_NAME",
        "UNDERLAY_EMAIL__CONFIGURATION_SET",
    )


def test_only_functions_with_an_email_grant_may_send(sending: Synth) -> None:
    senders = {f.name for f in declaration.FUNCTIONS if any(g.kind == "email" for g in f.grants)}
    assert senders == {"worker"}
    worker_role = ref(
        sending.props(sending.logical_id(sending.stack.functions.functions["worker"]))["Role"]["Fn::GetAtt"][
            0
        ]
    )
    for owner, statement in all_statements(sending):
        if any(a.startswith("ses:") for a in as_list(statement["Action"])):
            assert sending.props(owner).get("Roles") == [worker_role], owner


def test_sending_adds_no_unacknowledged_cdk_nag_finding(sending: Synth) -> None:
    assert sending.nag_violations == []
