"""DynamoDB tables and S3 buckets, one per declared table and bucket, under one customer-managed KMS key.

Also the tables' streams and their consumers: a table gets a stream when a declared function names it in
`table_stream`, and that function gets the stream as its event source.
"""

from __future__ import annotations

from aws_cdk import CfnElement, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from underlay import declaration

from infra.constructs import acknowledge, on_failure_queue

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
# Read the chain head, then put the entry and the new head in one TransactWriteItems (authorized per contained
# action: Put and ConditionCheck). Nothing else: no query, no update, no delete.
APPEND_ENTRIES = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:ConditionCheckItem")
PUT_ITEM = ("dynamodb:PutItem", "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable")
WRITE_ITEMS = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
)


# Stream consumers only archive what TTL removed, and a REMOVE record carries the item in its old image alone:
# OLD_IMAGE gives them that and keeps new entries' contents out of the stream (they are filtered out anyway).
STREAM_VIEW_TYPE = ddb.StreamViewType.OLD_IMAGE
# TTL removals, and nothing else: deletes by a principal (there are none on append-only tables) and every
# insert and update are dropped by Lambda before an invocation.
TTL_REMOVALS = {"userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}}
STREAM_BATCH_SIZE = 100
STREAM_RETRY_ATTEMPTS = 10
# Records older than this go to the on-failure queue (as shard and sequence numbers, not the items). The
# stream keeps records 24 h, which leaves 18 h to replay them from there once the cause is fixed.
STREAM_MAX_RECORD_AGE = Duration.hours(6)


def table_write_actions(table: str, access: declaration.Access) -> tuple[str, ...]:
    """The write actions a declared grant gets on a table; append-only tables get put-only whatever is asked."""
    if access == "append":
        return APPEND_ENTRIES
    if access == "put_only" or table in APPEND_ONLY_TABLES:
        return PUT_ITEM
    return WRITE_ITEMS


def streamed_tables() -> dict[str, list[str]]:
    """Declared table -> the functions that consume its stream."""
    streamed: dict[str, list[str]] = {}
    declared = {t.name for t in declaration.TABLES}
    for fn in declaration.FUNCTIONS:
        if fn.table_stream is None:
            continue
        if fn.table_stream not in declared:
            raise ValueError(
                f"function {fn.name!r} consumes the stream of undeclared table {fn.table_stream!r}"
            )
        streamed.setdefault(fn.table_stream, []).append(fn.name)
    return streamed


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
        streamed = streamed_tables()
        for spec in declaration.TABLES:
            self.tables[spec.name] = self._table(spec, removal_policy, stream=spec.name in streamed)
        self.stream_dlqs: dict[str, sqs.Queue] = {}  # consuming function -> its on-failure queue
        self._acknowledged: set[tuple[str, str]] = set()  # (role path, rule): one reason per finding
        self._stage = stage
        self._removal_policy = removal_policy

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

    def _table(self, spec: declaration.Table, removal_policy: RemovalPolicy, *, stream: bool) -> ddb.Table:
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
            stream=STREAM_VIEW_TYPE if stream else None,
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

    # --- stream consumers, called by the stack for each function that declares `table_stream` ---------------

    def add_stream_consumer(self, fn: lambda_.Function, name: str, *, function_name: str) -> sqs.Queue:
        """`fn` (declared as `function_name`) consumes table `name`'s stream, TTL removals only; a batch that
        keeps failing is recorded in a queue of its own."""
        table = self.tables[name]
        if table.table_stream_arn is None:
            raise ValueError(f"table {name!r} has no stream: declare table_stream on a function first")
        dlq = on_failure_queue(
            self,
            f"StreamDlq-{function_name}",
            name=f"{self._stage}-underlay-{function_name}-stream-dlq",
            removal_policy=self._removal_policy,
            holds=f"holds the shard and sequence ranges of {function_name}'s {name} stream batches that kept "
            "failing, to replay from the stream",
        )
        table.grant_stream_read(fn)  # DescribeStream, GetRecords, GetShardIterator, ListStreams, kms:Decrypt
        self._acknowledge_on_role(
            fn,
            "AwsSolutions-IAM5[Resource::*]",
            "dynamodb:ListStreams (from the stream read grant Lambda's poller needs) supports no resource-level "
            "permission; the records themselves are readable from this table's stream ARN only.",
        )
        fn.add_event_source(
            event_sources.DynamoEventSource(
                table,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=STREAM_BATCH_SIZE,
                bisect_batch_on_error=True,  # isolate a poison record instead of retrying the whole batch
                retry_attempts=STREAM_RETRY_ATTEMPTS,
                max_record_age=STREAM_MAX_RECORD_AGE,
                on_failure=event_sources.SqsDlq(dlq),
                filters=[lambda_.FilterCriteria.filter(TTL_REMOVALS)],
            )
        )
        self.stream_dlqs[function_name] = dlq
        return dlq

    # --- grants, called by the stack from each function's declared grants --------------------------------

    def grant_table(self, grantee: iam.IGrantable, name: str, access: declaration.Access) -> None:
        table = self.tables[name]
        if access == "describe":
            # DescribeTable authorizes on the table ARN; the index ARNs CDK's table.grant adds are not needed.
            self._grant_items(grantee, table, DESCRIBE_TABLE)
            return
        if access in ("read", "read_write"):
            table.grant_read_data(grantee)  # includes kms:Decrypt on the key
            if self._declared(name).indexes:
                self._acknowledge_on_role(
                    grantee,
                    f"AwsSolutions-IAM5[Resource::<{self._logical_id(table)}.Arn>/index/*]",
                    f"Query on the {name} table's global secondary indexes needs their ARNs; /index/* covers "
                    "only this table's own declared indexes, with read actions only.",
                )
        if access in ("write", "read_write", "put_only", "append"):
            actions = table_write_actions(name, access)
            if name in APPEND_ONLY_TABLES and ITEM_MUTATIONS & set(actions):
                raise ValueError(
                    f"table {name!r} is append-only; refusing {sorted(ITEM_MUTATIONS & set(actions))}"
                )
            # Writes and condition checks act on the table's items, never on an index: the table ARN alone.
            self._grant_items(grantee, table, actions)
            self.key.grant_encrypt_decrypt(grantee)
            self._acknowledge_key_wildcards(grantee, f"write items to the {name} table")

    def grant_bucket(self, grantee: iam.IGrantable, name: str, access: declaration.Access) -> None:
        bucket = self.buckets[name]
        if access == "describe":
            # HeadBucket is authorized by s3:ListBucket; nothing about the objects is readable with it.
            grantee.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
            )
            return
        if access == "read":
            bucket.grant_read(grantee)
        elif access == "put_only":
            bucket.grant_put(grantee)
        else:
            bucket.grant_read_write(grantee)
        self._acknowledge_object_grant(grantee, name, bucket, access)

    def _acknowledge_object_grant(
        self, grantee: iam.IGrantable, name: str, bucket: s3.Bucket, access: declaration.Access
    ) -> None:
        what = next(b.description for b in declaration.BUCKETS if b.name == name) or "objects"
        self._acknowledge_on_role(
            grantee,
            f"AwsSolutions-IAM5[Resource::<{self._logical_id(bucket)}.Arn>/*]",
            f"Object keys in the {name} bucket ({what}) are generated at run time, so the grant names this "
            "bucket's objects; it never reaches another bucket.",
        )
        if access != "put_only":  # grant_read, grant_read_write
            self._acknowledge_on_role(
                grantee,
                "AwsSolutions-IAM5[Action::s3:GetObject*]",
                f"CDK's read grant on the {name} bucket: GetObject and its version, tagging and retention "
                "variants, on this bucket's objects only.",
            )
            self._acknowledge_on_role(
                grantee,
                "AwsSolutions-IAM5[Action::s3:GetBucket*]",
                f"CDK's read grant on the {name} bucket: bucket-level Get actions (location, versioning, object "
                "lock configuration) on this one bucket, none of which reveal an object.",
            )
            self._acknowledge_on_role(
                grantee,
                "AwsSolutions-IAM5[Action::s3:List*]",
                f"Reading the {name} bucket includes listing it under a prefix (the newest audit digest is a "
                "one-key listing); the list actions apply to this bucket only.",
            )
        if access != "read":  # grant_put, grant_read_write
            self._acknowledge_on_role(
                grantee,
                "AwsSolutions-IAM5[Action::s3:Abort*]",
                f"s3:AbortMultipartUpload lets a writer to the {name} bucket clean up its own failed multipart "
                "uploads; it cannot remove a stored object.",
            )
        self._acknowledge_key_wildcards(grantee, f"read or write objects in the {name} bucket")

    def _acknowledge_key_wildcards(self, grantee: iam.IGrantable, purpose: str) -> None:
        reason = (
            f"SSE-KMS with the stack's data key, to {purpose}: the data-key actions DynamoDB and S3 document for "
            "a customer managed key, on this one key only."
        )
        self._acknowledge_on_role(grantee, "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]", reason)
        self._acknowledge_on_role(grantee, "AwsSolutions-IAM5[Action::kms:ReEncrypt*]", reason)

    def _acknowledge_on_role(self, grantee: iam.IGrantable, rule: str, reason: str) -> None:
        """Acknowledge a finding on the role a grant went to, where cdk-nag reports it (its default policy)."""
        principal = grantee.grant_principal
        if not isinstance(principal, Construct) or (principal.node.path, rule) in self._acknowledged:
            return
        self._acknowledged.add((principal.node.path, rule))
        acknowledge(principal, rule, reason)

    @staticmethod
    def _grant_items(grantee: iam.IGrantable, table: ddb.Table, actions: tuple[str, ...]) -> None:
        iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=[table.table_arn])

    @staticmethod
    def _declared(name: str) -> declaration.Table:
        return next(t for t in declaration.TABLES if t.name == name)

    def _logical_id(self, construct: Construct) -> str:
        """The logical ID cdk-nag prints in a finding's resource (`<DataTableaudit1234.Arn>`)."""
        element = construct.node.default_child
        if not isinstance(element, CfnElement):
            raise TypeError(f"{construct.node.path} has no CloudFormation resource of its own")
        return Stack.of(self).get_logical_id(element)
