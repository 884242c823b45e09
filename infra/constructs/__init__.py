"""One construct per concern; `infra/stack.py` composes them and wires the grants."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge a cdk-nag finding on `scope` and everything under it, with the reason it is acceptable.

    `rule` is the id cdk-nag reports (`AwsSolutions-L1`, `AwsSolutions-IAM5[Resource::*]`). cdk-nag 3.0 prints
    "Acknowledge with 'AwsSolutions::AwsSolutions-L1'", but only the bare id suppresses the finding.
    """
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))
