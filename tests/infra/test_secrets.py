"""Platform secrets: the cursor key is generated, the Sentry DSN is referenced by ARN from the stage settings."""

from __future__ import annotations

from tests.infra.conftest import Synth

SENTRY_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:underlay/sentry-AbCdEf"


def test_the_cursor_key_is_generated_and_no_sentry_secret_without_a_stage_setting(synth: Synth) -> None:
    secrets = synth.resources("AWS::SecretsManager::Secret")
    cursor = synth.props(synth.logical_id(synth.stack.secrets.cursor))
    assert cursor["GenerateSecretString"]["GenerateStringKey"] == "value"
    assert cursor["GenerateSecretString"]["PasswordLength"] >= 64
    assert synth.stack.secrets.sentry is None and len(secrets) == 2  # the cursor key and the Redis token


def test_a_stage_sentry_dsn_is_readable_by_the_functions_that_read_config() -> None:
    from aws_cdk import App, RemovalPolicy, Stack
    from aws_cdk import aws_iam as iam
    from aws_cdk.assertions import Match, Template

    from infra.constructs.secrets import Secrets

    stack = Stack(App(), "T")
    secrets = Secrets(
        stack, "Secrets", stage="dev", removal_policy=RemovalPolicy.DESTROY, sentry_dsn_secret_arn=SENTRY_ARN
    )
    role = iam.Role(stack, "Fn", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    secrets.grant_sentry(role)
    Template.from_stack(stack).has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": Match.array_with(["secretsmanager:GetSecretValue"]),
                                "Resource": SENTRY_ARN,
                            }
                        )
                    ]
                )
            }
        },
    )
