"""The audit log's infrastructure: the archiver on the audit table's stream, and the digest signing key."""

from __future__ import annotations

import copy
import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from underlay import declaration

from infra.constructs.audit import SIGNING_KEY_ENV
from infra.constructs.data import TTL_REMOVALS
from tests.infra.conftest import Synth, all_statements, allowed, arn, as_list, get_att, ref, role_statements

STREAM_EVENT = Path(__file__).resolve().parents[2] / "events" / "dynamodb" / "stream.json"


def _mapping(synth: Synth) -> dict[str, Any]:
    """The archiver's mapping (the job worker has SQS mappings of its own: tests/infra/test_jobs.py)."""
    archiver = ref(synth.logical_id(synth.stack.functions.functions["audit_archive"]))
    (mapping,) = [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == archiver
    ]
    return dict(mapping)


def _matches(pattern: dict[str, Any], record: dict[str, Any]) -> bool:
    """Lambda event filtering for the subset the filter uses: nested fields, each a list of exact values."""
    for field, expected in pattern.items():
        value = record.get(field)
        if isinstance(expected, dict):
            if not isinstance(value, dict) or not _matches(expected, value):
                return False
        elif value not in expected:
            return False
    return True


def _records() -> dict[str, dict[str, Any]]:
    """A TTL removal, a removal by a principal and an insert, from the shared sample stream event."""
    (insert,) = json.loads(STREAM_EVENT.read_text())["Records"]
    removal = copy.deepcopy(insert)
    removal["eventName"] = "REMOVE"
    removal["dynamodb"]["OldImage"] = removal["dynamodb"].pop("NewImage")
    ttl = copy.deepcopy(removal)
    ttl["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return {"ttl": ttl, "user_delete": removal, "insert": insert}


def test_the_archiver_consumes_the_audit_stream(synth: Synth) -> None:
    mapping = _mapping(synth)
    (consumer,) = [f for f in declaration.FUNCTIONS if f.table_stream]
    assert (consumer.name, consumer.table_stream) == ("audit_archive", "audit")
    assert mapping["EventSourceArn"] == get_att(
        synth.logical_id(synth.stack.data.tables["audit"]), "StreamArn"
    )
    assert mapping["FunctionName"] == ref(synth.logical_id(synth.stack.functions.functions["audit_archive"]))
    assert mapping["StartingPosition"] == "TRIM_HORIZON"  # nothing removed before the first deploy is skipped
    assert mapping["BatchSize"] == 100


def test_a_failing_batch_is_bisected_retried_then_recorded_in_an_alarmed_queue(synth: Synth) -> None:
    mapping = _mapping(synth)
    dlq = synth.stack.data.stream_dlqs["audit_archive"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == 10
    # Inside the stream's 24 h retention, so a failed batch can still be replayed from the stream.
    assert 0 < mapping["MaximumRecordAgeInSeconds"] < 24 * 3600
    assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": get_att(synth.logical_id(dlq))}}
    queue = synth.props(synth.logical_id(dlq))
    assert queue["SqsManagedSseEnabled"] is True
    alarmed = [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Dimensions")
        == [{"Name": "QueueName", "Value": get_att(synth.logical_id(dlq), "QueueName")}]
    ]
    assert alarmed and alarmed[0]["Threshold"] == 0
    sends = allowed(role_statements(synth, "audit_archive"), "sqs:")
    assert sends["sqs:SendMessage"] == {arn(synth, dlq)}


def test_only_ttl_removals_invoke_the_archiver(synth: Synth) -> None:
    (criterion,) = _mapping(synth)["FilterCriteria"]["Filters"]
    pattern = json.loads(criterion["Pattern"])
    assert (
        pattern
        == TTL_REMOVALS
        == {"userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}}
    )
    verdicts = {name: _matches(pattern, record) for name, record in _records().items()}
    assert verdicts == {"ttl": True, "user_delete": False, "insert": False}


def test_the_audit_table_streams_the_old_images_the_archiver_reads(synth: Synth) -> None:
    audit = synth.props(synth.logical_id(synth.stack.data.tables["audit"]))
    assert audit["StreamSpecification"]["StreamViewType"] in {"OLD_IMAGE", "NEW_AND_OLD_IMAGES"}
    assert audit["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_the_signing_key_is_an_ecc_p256_signing_key(synth: Synth) -> None:
    key = synth.props(synth.logical_id(synth.stack.audit.signing_key))
    assert key["KeySpec"] == "ECC_NIST_P256"
    assert key["KeyUsage"] == "SIGN_VERIFY"
    assert not key.get("EnableKeyRotation")  # KMS rejects rotation on asymmetric keys


def test_the_audit_api_may_verify_digests(synth: Synth) -> None:
    key = arn(synth, synth.stack.audit.signing_key)
    verify = declaration.route("GET /v1/audit-logs/verify")
    assert verify is not None and verify.function == "audit"
    kms = allowed(role_statements(synth, "audit"), "kms:")
    assert kms["kms:Verify"] == {key}
    assert kms["kms:GetPublicKey"] == {key}


def _job_workers() -> set[str]:
    """Functions that consume job queues (not a subscription's `sub-<name>` queue): they run the built-in
    `audit.digest` job."""
    return {f.name for f in declaration.FUNCTIONS if any(not q.startswith("sub-") for q in f.consumes)}


def test_only_the_job_worker_may_sign(synth: Synth) -> None:
    """Signing is the audit.digest job's, which runs in the job worker; no other role gets kms:Sign."""
    assert _job_workers() == {"worker"}
    key = synth.logical_id(synth.stack.audit.signing_key)
    signers: set[str] = set()
    for owner, statement in all_statements(synth):
        if statement["Effect"] != "Allow":
            continue
        on_key = any(r == "*" or key in json.dumps(r) for r in as_list(statement["Resource"]))
        if on_key and any(fnmatchcase("kms:sign", a.lower()) for a in as_list(statement["Action"])):
            signers.add(owner)
    roles = {
        json.dumps(role, sort_keys=True)
        for owner in signers
        for role in synth.props(owner).get("Roles", [{"Ref": owner}])
    }
    expected = {
        json.dumps(
            {
                "Ref": synth.props(synth.logical_id(synth.stack.functions.functions[name]))["Role"][
                    "Fn::GetAtt"
                ][0]
            },
            sort_keys=True,
        )
        for name in _job_workers()
    }
    assert roles == expected
    assert allowed(role_statements(synth, "worker"), "kms:")["kms:Sign"] == {
        arn(synth, synth.stack.audit.signing_key)
    }


def test_the_worker_gets_the_digest_writer_grant(synth: Synth) -> None:
    bucket = json.loads(arn(synth, synth.stack.data.buckets["audit"]))
    digests = json.dumps({"Fn::Join": ["", [bucket, "/digests/*"]]}, sort_keys=True)
    assert digests in allowed(role_statements(synth, "worker"), "s3:")["s3:PutObjectRetention"]
    assert all(
        digests not in allowed(role_statements(synth, f.name), "s3:").get("s3:PutObjectRetention", set())
        for f in declaration.FUNCTIONS
        if f.name not in _job_workers()
    )


def test_the_signing_key_id_reaches_only_the_functions_that_use_the_key(synth: Synth) -> None:
    key = get_att(synth.logical_id(synth.stack.audit.signing_key))
    users = {"audit"} | _job_workers()
    for spec in declaration.FUNCTIONS:
        fn = synth.props(synth.logical_id(synth.stack.functions.functions[spec.name]))
        env = fn["Environment"]["Variables"]
        if spec.name in users:
            assert env[SIGNING_KEY_ENV] == key, spec.name
        else:
            assert SIGNING_KEY_ENV not in env, spec.name


def test_the_digest_writer_seam_grants_signing_and_digest_retention() -> None:
    """Exactly what the digest writer gets, in a stack of its own: the app's worker has other kms and s3 grants."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_s3 as s3
    from aws_cdk.assertions import Template

    from infra.constructs.audit import Audit

    stack = cdk.Stack(cdk.App(), "DigestWriter")
    audit = Audit(stack, "Audit", stage="dev", removal_policy=cdk.RemovalPolicy.DESTROY)
    bucket = s3.Bucket(stack, "Bucket")
    worker = lambda_.Function(
        stack,
        "Worker",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context): pass"),
    )
    audit.grant_digest_writer(worker, bucket)
    template = Template.from_stack(stack).to_json()
    statements = [
        s
        for r in template["Resources"].values()
        if r["Type"] == "AWS::IAM::Policy"
        for s in r["Properties"]["PolicyDocument"]["Statement"]
    ]
    key = json.dumps(get_att(stack.resolve(audit.signing_key.key_arn)["Fn::GetAtt"][0]), sort_keys=True)
    assert allowed(statements, "kms:") == {"kms:Sign": {key}, "kms:GetPublicKey": {key}}
    bucket_arn = stack.resolve(bucket.bucket_arn)
    digests = json.dumps({"Fn::Join": ["", [bucket_arn, "/digests/*"]]}, sort_keys=True)
    assert allowed(statements, "s3:") == {"s3:PutObjectRetention": {digests}}
    (fn,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert fn["Properties"]["Environment"]["Variables"][SIGNING_KEY_ENV] == json.loads(key)
