"""One construct per concern; `infra/stack.py` composes them and wires the grants."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge a cdk-nag finding on `scope` and everything under it, with the reason it is acceptable.

    `rule` is the id cdk-nag reports (`AwsSolutions-L1`, `AwsSolutions-IAM5[Resource::*]`). cdk-nag 3.0 prints
    "Acknowledge with 'AwsSolutions::AwsSolutions-L1'", but only the bare id suppresses the finding.
    """
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def on_failure_queue(
    scope: Construct, id: str, *, name: str, removal_policy: RemovalPolicy, holds: str
) -> sqs.Queue:
    """A queue that is itself a dead-letter destination (an event source's on-failure queue): encrypted, TLS
    only, kept 14 days, and acknowledged for having no DLQ of its own; `holds` says what lands in it."""
    queue = sqs.Queue(
        scope,
        id,
        queue_name=name,
        retention_period=Duration.days(14),
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        removal_policy=removal_policy,
    )
    acknowledge(queue, "AwsSolutions-SQS3", f"This queue is itself an on-failure destination: it {holds}.")
    return queue


def generated_secret(
    scope: Construct,
    id: str,
    *,
    description: str,
    key: str,
    rotation: str,
    removal_policy: RemovalPolicy | None = None,
) -> secretsmanager.Secret:
    """A Secrets Manager secret whose value CDK generates: `{"<key>": <64 letters and digits>}` (~380 bits; no
    punctuation, which some consumers such as ElastiCache AUTH refuse). `rotation` says how it is rotated instead of
    a rotation Lambda (the cdk-nag SMG4 acknowledgment)."""
    secret = secretsmanager.Secret(
        scope,
        id,
        description=description,
        generate_secret_string=secretsmanager.SecretStringGenerator(
            secret_string_template="{}",  # noqa: S106 (an empty JSON object; the value is generated)
            generate_string_key=key,
            exclude_punctuation=True,
            include_space=False,
            password_length=64,
        ),
        removal_policy=removal_policy,
    )
    acknowledge(secret, "AwsSolutions-SMG4", rotation)
    return secret
