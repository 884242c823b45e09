"""The audit log's signing key: an asymmetric KMS key whose signatures make the hourly digests tamper-evident.

The audit table and bucket are declared resources and live in `Data`; what only the audit log has is this key.
Signing belongs to the `audit.digest` job and verifying to whoever serves `GET /v1/audit-logs/verify`; the
stack decides who that is, and each grant also sets the one setting the layer reads,
`UNDERLAY_AUDIT__SIGNING_KEY_ID` (`AuditSettings.signing_key_id`).
"""

from __future__ import annotations

from aws_cdk import CfnElement, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs import acknowledge

SIGNING_KEY_ENV = "UNDERLAY_AUDIT__SIGNING_KEY_ID"
DIGEST_PREFIX = "digests/"  # `underlay.audit.digest.PREFIX` starts with it


class Audit(Construct):
    """The ECC_NIST_P256 SIGN_VERIFY key the digests are signed with (ECDSA_SHA_256, like CloudTrail's)."""

    def __init__(self, scope: Construct, id: str, *, stage: str, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, id)
        self.signing_key = kms.Key(
            self,
            "SigningKey",
            alias=f"alias/underlay-{stage}-audit-signing",
            description=f"Underlay {stage}: signs audit digests (ECDSA P-256)",
            key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            # No rotation: KMS cannot rotate asymmetric keys (cdk-nag's KMS5 only checks symmetric ones, so
            # there is nothing to acknowledge). A digest names the key that signed it, so a successor key can
            # be introduced by hand without breaking the verification of older digests.
            removal_policy=removal_policy,
        )

    def grant_verify(self, fn: lambda_.Function) -> None:
        """Check digest signatures: kms:Verify, and kms:GetPublicKey to hand the key out for offline checks."""
        iam.Grant.add_to_principal(
            grantee=fn,
            actions=["kms:Verify", "kms:GetPublicKey"],
            resource_arns=[self.signing_key.key_arn],
        )
        fn.add_environment(SIGNING_KEY_ENV, self.signing_key.key_arn)

    def grant_digest_writer(self, fn: lambda_.Function, bucket: s3.IBucket) -> None:
        """Sign digests and store them under Object Lock; the function also needs the audit bucket's declared
        read (it reads the previous digest) and put_only grants.

        The stack grants this to the job workers, which run the `audit.digest` job (schedule `audit-digest`).
        """
        iam.Grant.add_to_principal(
            grantee=fn,
            actions=["kms:Sign", "kms:GetPublicKey"],
            resource_arns=[self.signing_key.key_arn],
        )
        # A put that sets ObjectLockMode/RetainUntilDate itself (the digest does) also needs this action.
        iam.Grant.add_to_principal(
            grantee=fn,
            actions=["s3:PutObjectRetention"],
            resource_arns=[bucket.arn_for_objects(f"{DIGEST_PREFIX}*")],
        )
        element = bucket.node.default_child
        if fn.role is not None and isinstance(element, CfnElement):
            bucket_id = Stack.of(self).get_logical_id(element)
            acknowledge(
                fn.role,
                f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{DIGEST_PREFIX}*]",
                "Digest keys are generated per digest (inverted time and a ULID), so retention may be set on "
                "any object under the digests/ prefix of the audit bucket, and nowhere else.",
            )
        fn.add_environment(SIGNING_KEY_ENV, self.signing_key.key_arn)
