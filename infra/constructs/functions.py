"""The shared layer and one Lambda function per declared function."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from underlay import declaration

from infra.constructs import acknowledge

RUNTIME = lambda_.Runtime.PYTHON_3_12  # the layer's wheels are cp312: change both together
ARCHITECTURE = (
    lambda_.Architecture.ARM_64
)  # ~20% cheaper per GB-second than x86_64, and the wheels are aarch64
VPC_ACCESS_POLICY = "service-role/AWSLambdaVPCAccessExecutionRole"


class Functions(Construct):
    """One function per `declaration.FUNCTIONS` entry, every one running the same staged `functions/` package.

    Each function gets its own role (only its own log group, plus what the stack grants it from the
    declaration), its own log group with the stage's retention, and the settings every function reads.
    Functions that need Redis run in the VPC's private subnets with the functions' security group; the others
    (the authorizer above all) stay out of the VPC: no ENI cold start, and nothing in the VPC to reach.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        layer_dir: Path,
        code_dir: Path,
        environment: Mapping[str, str],
        tracing: bool,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, id)
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=lambda_.Code.from_asset(str(layer_dir)),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="underlay package and its dependencies (cp312, aarch64)",
        )
        code = lambda_.Code.from_asset(str(code_dir))
        self.functions: dict[str, lambda_.Function] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        for spec in declaration.FUNCTIONS:
            log_group = logs.LogGroup(
                self, f"Logs-{spec.name}", retention=log_retention, removal_policy=removal_policy
            )
            role = iam.Role(
                self,
                f"Role-{spec.name}",
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"Underlay function {spec.name}",
            )
            log_group.grant_write(role)  # instead of AWSLambdaBasicExecutionRole's logs:* on every group
            if spec.needs_redis:
                # CDK adds this only to roles it creates itself; without it the function cannot get its ENIs.
                role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(VPC_ACCESS_POLICY))
                acknowledge(
                    role,
                    f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{VPC_ACCESS_POLICY}]",
                    "Lambda needs the ENI actions in this AWS-maintained policy to run in a VPC; they have no "
                    "resource-level scoping to narrow them to.",
                )
            fn = lambda_.Function(
                self,
                f"Fn-{spec.name}",
                description=spec.description,
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                handler=spec.handler,
                code=code,
                layers=[self.layer],
                memory_size=spec.memory_mb,
                timeout=Duration.seconds(spec.timeout_s),
                role=role,
                environment={**environment, "POWERTOOLS_SERVICE_NAME": spec.name},
                log_group=log_group,
                logging_format=lambda_.LoggingFormat.JSON,
                tracing=lambda_.Tracing.ACTIVE if tracing else lambda_.Tracing.DISABLED,
                vpc=vpc if spec.needs_redis else None,
                vpc_subnets=subnets if spec.needs_redis else None,
                security_groups=[security_group] if spec.needs_redis else None,
            )
            acknowledge(
                fn,
                "AwsSolutions-L1",
                "Pinned to python3.12 on purpose: the layer is built from cp312 aarch64 wheels, so the runtime "
                "and the layer build move to a newer Python together.",
            )
            if tracing:
                acknowledge(
                    role,
                    "AwsSolutions-IAM5[Resource::*]",
                    "xray:PutTraceSegments and xray:PutTelemetryRecords (added for active tracing) do not "
                    "support resource-level permissions.",
                )
            self.functions[spec.name] = fn
            self.log_groups[spec.name] = log_group
