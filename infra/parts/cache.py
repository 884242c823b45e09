from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct


class Cache(Construct):
    """ElastiCache (Valkey) in the private subnets: TLS in transit, encrypted at rest, auth token from Secrets Manager."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        vpc: ec2.IVpc,
        clients: ec2.ISecurityGroup,
        node_type: str,
        replicas: int,
    ) -> None:
        super().__init__(scope, id)
        self.secret = secretsmanager.Secret(
            self,
            "AuthToken",
            description="ElastiCache auth token",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template='{"user":"default"}',  # noqa: S106 (a template; the token is generated)
                generate_string_key="token",
                exclude_punctuation=True,
                password_length=48,
            ),
        )
        self.security_group = ec2.SecurityGroup(self, "Sg", vpc=vpc, description="Underlay cache")
        self.security_group.add_ingress_rule(clients, ec2.Port.tcp(6379), "functions to Redis")
        subnets = elasticache.CfnSubnetGroup(
            self,
            "Subnets",
            description="Underlay cache subnets",
            subnet_ids=vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
        )
        self.group = elasticache.CfnReplicationGroup(
            self,
            "Group",
            replication_group_description="Underlay cache",
            engine="valkey",
            cache_node_type=node_type,
            num_cache_clusters=1 + replicas,
            automatic_failover_enabled=replicas > 0,
            multi_az_enabled=replicas > 0,
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            auth_token=self.secret.secret_value_from_json("token").unsafe_unwrap(),
            cache_subnet_group_name=subnets.ref,
            security_group_ids=[self.security_group.security_group_id],
            port=6379,
        )
        self.host = self.group.attr_primary_end_point_address
