"""Tables and buckets: one per declaration, each with the protections the SPEC requires."""

from __future__ import annotations

from underlay import declaration

from tests.infra.conftest import Synth, as_list, get_att, ref


def test_every_declared_table_exists_with_its_keys_pitr_kms_and_on_demand(synth: Synth) -> None:
    key_arn = get_att(synth.logical_id(synth.stack.data.key))
    assert len(synth.resources("AWS::DynamoDB::Table")) == len(declaration.TABLES)
    for spec in declaration.TABLES:
        props = synth.props(synth.logical_id(synth.stack.data.tables[spec.name]))
        expected_keys = [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
        if spec.sort_key:
            expected_keys.append({"AttributeName": spec.sort_key, "KeyType": "RANGE"})
        assert props["KeySchema"] == expected_keys, spec.name
        assert props["BillingMode"] == "PAY_PER_REQUEST", spec.name
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, spec.name
        assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn}
        if spec.ttl_attribute:
            assert props["TimeToLiveSpecification"] == {"AttributeName": spec.ttl_attribute, "Enabled": True}
        else:
            assert "TimeToLiveSpecification" not in props, spec.name
        indexes = {i["IndexName"]: i["KeySchema"] for i in props.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {i.name for i in spec.indexes}, spec.name


def test_removal_policy_follows_the_stage(synth: Synth) -> None:
    expected = "Retain" if synth.config.removal_policy == "retain" else "Delete"
    for table in synth.resources("AWS::DynamoDB::Table").values():
        assert table["DeletionPolicy"] == expected


def test_symmetric_keys_rotate(synth: Synth) -> None:
    """Every encryption key rotates; only the asymmetric signing key cannot (KMS refuses rotation for it)."""
    keys = synth.resources("AWS::KMS::Key")
    signing = synth.logical_id(synth.stack.audit.signing_key)
    assert synth.logical_id(synth.stack.data.key) in keys
    for logical_id, key in keys.items():
        props = key["Properties"]
        if logical_id == signing:
            assert props["KeyUsage"] == "SIGN_VERIFY" and not props.get("EnableKeyRotation")
        else:
            assert props.get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT", logical_id
            assert props["EnableKeyRotation"] is True, logical_id


def test_buckets_block_public_access_and_deny_plain_http(synth: Synth) -> None:
    buckets = synth.resources("AWS::S3::Bucket")
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
        for p in synth.resources("AWS::S3::BucketPolicy").values()
    }
    for logical_id, bucket in buckets.items():
        block = bucket["Properties"]["PublicAccessBlockConfiguration"]
        assert block == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        assert bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"], logical_id
        denies_http = [
            s
            for s in policies[logical_id]
            if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert denies_http, f"{logical_id} does not deny requests without TLS"
        assert get_att(logical_id) in as_list(denies_http[0]["Resource"])


def test_declared_buckets_use_the_kms_key_and_log_access(synth: Synth) -> None:
    key_arn = get_att(synth.logical_id(synth.stack.data.key))
    access_logs = synth.logical_id(synth.stack.data.access_logs)
    for spec in declaration.BUCKETS:
        props = synth.props(synth.logical_id(synth.stack.data.buckets[spec.name]))
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
        assert props["LoggingConfiguration"]["DestinationBucketName"] == ref(access_logs)
        if spec.versioned or spec.object_lock:
            assert props["VersioningConfiguration"] == {"Status": "Enabled"}, spec.name


def test_audit_bucket_has_object_lock_in_compliance_mode(synth: Synth) -> None:
    locked = [b for b in declaration.BUCKETS if b.object_lock]
    assert [b.name for b in locked] == ["audit"]
    for spec in declaration.BUCKETS:
        props = synth.props(synth.logical_id(synth.stack.data.buckets[spec.name]))
        if spec.object_lock:
            assert props["ObjectLockEnabled"] is True
            assert props["ObjectLockConfiguration"] == {
                "ObjectLockEnabled": "Enabled",
                "Rule": {
                    "DefaultRetention": {"Mode": "COMPLIANCE", "Days": synth.config.audit_retention_days}
                },
            }
        else:
            assert "ObjectLockEnabled" not in props and "ObjectLockConfiguration" not in props, spec.name


def test_a_table_streams_exactly_when_a_declared_function_consumes_it(synth: Synth) -> None:
    consumed = {f.table_stream for f in declaration.FUNCTIONS if f.table_stream}
    assert consumed, "expected at least the audit archiver"
    for spec in declaration.TABLES:
        props = synth.props(synth.logical_id(synth.stack.data.tables[spec.name]))
        if spec.name in consumed:
            # Old images: a TTL removal carries the removed item there, and nothing else is consumed.
            assert props["StreamSpecification"] == {"StreamViewType": "OLD_IMAGE"}, spec.name
        else:
            assert "StreamSpecification" not in props, spec.name
