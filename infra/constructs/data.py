"""DynamoDB tables and S3 buckets, one per declared table and bucket, under one customer-managed KMS key."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct
from underlay import declaration

# Tables that only ever grow: entries are appended and never changed or removed, so no grant may carry an
# action that rewrites or deletes an item (BatchWriteItem and PartiQL can delete too). The audit chain's
# tamper evidence rests on this as much as on its hashes.
APPEND_ONLY_TABLES = frozenset({"audit"})
ITEM_MUTATIONS = frozenset(
    {
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:PartiQLUpdate",
        "dynamodb:PartiQLDelete",
    }
)
DESCRIBE_TABLE = ("dynamodb:DescribeTable",)
PUT_ITEM = ("dynamodb:PutItem", "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable")
WRITE_ITEMS = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
)


def table_write_actions(table: str, access: declaration.Access) -> tuple[str, ...]:
    """The write actions a declared grant gets on a table; append-only tables get put-only whatever is asked."""
    if access == "put_only" or table in APPEND_ONLY_TABLES:
        return PUT_ITEM
    return WRITE_ITEMS


class Data(Construct):
    """Every declared table (on-demand, PITR, KMS, TTL, GSIs) and bucket (TLS only, no public access, KMS)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        removal_policy: RemovalPolicy,
        audit_retention_days: int,
        access_log_retention_days: int,
    ) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/underlay-{stage}-data",
            description=f"Underlay {stage}: DynamoDB tables and S3 buckets",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.tables: dict[str, ddb.Table] = {}
        for spec in declaration.TABLES:
            self.tables[spec.name] = self._table(spec, removal_policy)

        # S3 server access logs can only be delivered to an SSE-S3 bucket, hence not the KMS key here.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(access_log_retention_days))],
            removal_policy=removal_policy,
        )
        self.buckets: dict[str, s3.Bucket] = {}
        for bucket in declaration.BUCKETS:
            self.buckets[bucket.name] = self._bucket(bucket, removal_policy, audit_retention_days)

    def _table(self, spec: declaration.Table, removal_policy: RemovalPolicy) -> ddb.Table:
        def key(name: str | None) -> ddb.Attribute | None:
            return ddb.Attribute(name=name, type=ddb.AttributeType.STRING) if name else None

        table = ddb.Table(
            self,
            f"Table-{spec.name}",
            partition_key=ddb.Attribute(name=spec.partition_key, type=ddb.AttributeType.STRING),
            sort_key=key(spec.sort_key),
            billing_mode=ddb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=ddb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=ddb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            time_to_live_attribute=spec.ttl_attribute,
            deletion_protection=removal_policy == RemovalPolicy.RETAIN,
            removal_policy=removal_policy,
        )
        for index in spec.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=ddb.Attribute(name=index.partition_key, type=ddb.AttributeType.STRING),
                sort_key=key(index.sort_key),
            )
        return table

    def _bucket(
        self, spec: declaration.Bucket, removal_policy: RemovalPolicy, audit_retention_days: int
    ) -> s3.Bucket:
        return s3.Bucket(
            self,
            f"Bucket-{spec.name}",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,  # one KMS call per bucket key, not per object
            enforce_ssl=True,
            versioned=spec.versioned or spec.object_lock,  # Object Lock requires versioning
            object_lock_enabled=spec.object_lock or None,
            object_lock_default_retention=s3.ObjectLockRetention.compliance(
                Duration.days(audit_retention_days)
            )
            if spec.object_lock
            else None,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{spec.name}/",
            removal_policy=removal_policy,
        )

    # --- grants, called by the stack from each function's declared grants --------------------------------

    def grant_table(self, grantee: iam.IGrantable, name: str, access: declaration.Access) -> None:
        table = self.tables[name]
        if access == "describe":
            table.grant(grantee, *DESCRIBE_TABLE)
            return
        if access in ("read", "read_write"):
            table.grant_read_data(grantee)  # includes kms:Decrypt on the key
        if access in ("write", "read_write", "put_only"):
            actions = table_write_actions(name, access)
            if name in APPEND_ONLY_TABLES and ITEM_MUTATIONS & set(actions):
                raise ValueError(
                    f"table {name!r} is append-only; refusing {sorted(ITEM_MUTATIONS & set(actions))}"
                )
            table.grant(grantee, *actions)
            self.key.grant_encrypt_decrypt(grantee)

    def grant_bucket(self, grantee: iam.IGrantable, name: str, access: declaration.Access) -> None:
        bucket = self.buckets[name]
        if access == "describe":
            # HeadBucket is authorized by s3:ListBucket; nothing about the objects is readable with it.
            grantee.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
            )
        elif access == "read":
            bucket.grant_read(grantee)
        elif access == "put_only":
            bucket.grant_put(grantee)
        else:
            bucket.grant_read_write(grantee)
