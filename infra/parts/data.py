from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct
from underlay import declaration


class Data(Construct):
    """One DynamoDB table per declared table and one bucket per declared bucket, under one KMS key."""

    def __init__(
        self, scope: Construct, id: str, *, removal: RemovalPolicy, audit_retention_days: int
    ) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self, "Key", enable_key_rotation=True, description="Underlay data", removal_policy=removal
        )
        self.tables: dict[str, ddb.Table] = {}
        for spec in declaration.TABLES:
            table = ddb.Table(
                self,
                f"Table-{spec.name}",
                partition_key=ddb.Attribute(name=spec.partition_key, type=ddb.AttributeType.STRING),
                sort_key=ddb.Attribute(name=spec.sort_key, type=ddb.AttributeType.STRING)
                if spec.sort_key
                else None,
                billing_mode=ddb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=ddb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=ddb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=self.key,
                time_to_live_attribute=spec.ttl_attribute,
                removal_policy=removal,
            )
            for index in spec.indexes:
                table.add_global_secondary_index(
                    index_name=index.name,
                    partition_key=ddb.Attribute(name=index.partition_key, type=ddb.AttributeType.STRING),
                    sort_key=ddb.Attribute(name=index.sort_key, type=ddb.AttributeType.STRING)
                    if index.sort_key
                    else None,
                )
            self.tables[spec.name] = table
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            removal_policy=removal,
            auto_delete_objects=False,
        )
        self.buckets: dict[str, s3.Bucket] = {}
        for bucket_spec in declaration.BUCKETS:
            self.buckets[bucket_spec.name] = s3.Bucket(
                self,
                f"Bucket-{bucket_spec.name}",
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                encryption=s3.BucketEncryption.KMS,
                encryption_key=self.key,
                bucket_key_enabled=True,
                enforce_ssl=True,
                versioned=bucket_spec.versioned or bucket_spec.object_lock,
                object_lock_enabled=bucket_spec.object_lock or None,
                object_lock_default_retention=s3.ObjectLockRetention.compliance(
                    Duration.days(audit_retention_days)
                )
                if bucket_spec.object_lock
                else None,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"{bucket_spec.name}/",
                removal_policy=removal,
            )
