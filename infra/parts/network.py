from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct


class Network(Construct):
    """A VPC with isolated private subnets (no NAT: nothing here needs the internet) and endpoints:
    gateway endpoints for DynamoDB and S3, interface endpoints for the APIs the in-VPC functions call."""

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
            flow_logs={"all": ec2.FlowLogOptions(traffic_type=ec2.FlowLogTrafficType.REJECT)},
        )
        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        for name, service in {
            "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
            "Events": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
        }.items():
            self.vpc.add_interface_endpoint(name, service=service, private_dns_enabled=True)
        self.functions_sg = ec2.SecurityGroup(
            self, "FunctionsSg", vpc=self.vpc, description="Underlay functions"
        )
