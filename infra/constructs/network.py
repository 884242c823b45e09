"""The VPC the cache lives in, and the in-VPC functions with it."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct


class Network(Construct):
    """Private subnets for ElastiCache and the functions that use it, reaching AWS through VPC endpoints.

    With `nat_gateways=0` (dev) the subnets are PRIVATE_ISOLATED: no internet route at all, so nothing pays for
    a NAT gateway (~32 USD/month each plus data) while idle. The in-VPC functions still reach everything they
    call on AWS: DynamoDB and S3 through gateway endpoints (free), Secrets Manager, SQS and EventBridge through
    interface endpoints. With NAT gateways (prod) the subnets become PRIVATE_WITH_EGRESS so health checks of
    external HTTP services and error tracking can leave the VPC; the endpoints stay, keeping AWS traffic off
    the NAT's per-GB charge.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        nat_gateways: int,
        max_azs: int,
        endpoints_single_az: bool,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id)
        private_type = ec2.SubnetType.PRIVATE_WITH_EGRESS if nat_gateways else ec2.SubnetType.PRIVATE_ISOLATED
        subnets = [ec2.SubnetConfiguration(name="private", subnet_type=private_type, cidr_mask=22)]
        if nat_gateways:
            subnets.append(
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=26)
            )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=max_azs,
            nat_gateways=nat_gateways,
            subnet_configuration=subnets,
            restrict_default_security_group=False,  # the custom resource that strips it needs its own Lambda
        )
        self.private_subnets = ec2.SubnetSelection(subnet_type=private_type)

        self.flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=log_retention, removal_policy=removal_policy
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_logs),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        # Functions placed in the VPC. Egress is HTTPS (endpoints, gateway prefix lists, the internet when a
        # NAT exists); the cache construct opens 6379 from this group to its own.
        self.functions_sg = ec2.SecurityGroup(
            self,
            "FunctionsSg",
            vpc=self.vpc,
            description="Underlay functions in the VPC",
            allow_all_outbound=False,
        )
        self.functions_sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS endpoints")

        self.vpc.add_gateway_endpoint(
            "DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB, subnets=[self.private_subnets]
        )
        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.private_subnets]
        )
        endpoint_subnets = (
            ec2.SubnetSelection(subnets=self.vpc.select_subnets(subnet_type=private_type).subnets[:1])
            if endpoints_single_az
            else self.private_subnets
        )
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        for name, service in (
            ("SecretsManager", ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER),
            ("Sqs", ec2.InterfaceVpcEndpointAwsService.SQS),
            ("Events", ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE),
        ):
            endpoint = self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=endpoint_subnets,
                private_dns_enabled=True,
                open=False,  # only the functions' group, not the whole VPC CIDR
            )
            endpoint.connections.allow_default_port_from(self.functions_sg, "functions to the endpoint")
            self.interface_endpoints[name] = endpoint
