"""ElastiCache for the cache, the limiter and the flag version stamps."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from constructs import Construct

from infra.constructs import acknowledge, generated_secret

PORT = 6379
# Valkey is the open-source continuation of Redis OSS 7.2: the same protocol and commands (redis-py speaks
# to it unchanged), and ElastiCache prices it below Redis OSS.
ENGINE = "valkey"
ENGINE_VERSION = "8.0"


class Cache(Construct):
    """A Valkey replication group in the private subnets: TLS in transit, encrypted at rest, AUTH token.

    The token is generated into Secrets Manager; functions get the secret's ARN and read it at cold start.
    Only the `clients` security group may connect, and only on 6379.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        clients: ec2.ISecurityGroup,
        node_type: str,
        replicas: int,
    ) -> None:
        super().__init__(scope, id)
        self.secret = generated_secret(
            self,
            "AuthToken",
            description=f"Underlay {stage}: ElastiCache AUTH token",
            key="token",
            rotation="Rotating an ElastiCache AUTH token needs a two-phase ROTATE/SET update on the replication "
            "group, which Secrets Manager's rotation Lambdas do not do; rotate by redeploying with a new token.",
        )

        self.security_group = ec2.SecurityGroup(
            self, "Sg", vpc=vpc, description="Underlay cache: functions only", allow_all_outbound=False
        )
        # Adds the ingress rule here and, as the clients' group has no open egress, the egress rule there.
        self.security_group.connections.allow_from(clients, ec2.Port.tcp(PORT), "functions to the cache")

        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "Subnets",
            description=f"Underlay {stage} cache subnets",
            subnet_ids=vpc.select_subnets(
                subnet_type=subnets.subnet_type, subnet_group_name=subnets.subnet_group_name
            ).subnet_ids,
        )
        highly_available = replicas > 0
        self.group = elasticache.CfnReplicationGroup(
            self,
            "Group",
            replication_group_description=f"Underlay {stage} cache",
            engine=ENGINE,
            engine_version=ENGINE_VERSION,
            cache_node_type=node_type,
            num_cache_clusters=1 + replicas,
            automatic_failover_enabled=highly_available,
            multi_az_enabled=highly_available,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            # A dynamic reference: CloudFormation resolves it at deploy time, the token never enters the template.
            auth_token=self.secret.secret_value_from_json("token").unsafe_unwrap(),
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            port=PORT,
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=1 if highly_available else 0,
        )
        if not highly_available:
            acknowledge(
                self.group,
                "AwsSolutions-AEC4",
                f"Stage {stage} runs one node to keep cost down (stage config redis.replicas=0); the cache "
                "is disposable and every caller degrades to the source of truth. prod sets replicas >= 1.",
            )

        self.host = self.group.attr_primary_end_point_address
        self.port = self.group.attr_primary_end_point_port
