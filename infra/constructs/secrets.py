"""Platform secrets in Secrets Manager (issue 5): generated here, read by functions through Powertools Parameters.

Only the functions that need a secret get its ARN and `secretsmanager:GetSecretValue` on it (the stack grants).
- `cursor`: the HMAC key that signs list cursors (`underlay.pagination`), for every function that serves routes.
- `sentry`: the Sentry DSN, when the stage names one (`settings.observability.sentry_dsn_secret_arn`). It is
  created outside the stack (it holds an account's DSN), so only its ARN is known here; every function that reads
  the configuration may read it. Without it Sentry is off.
The ElastiCache AUTH token lives with the cache (`infra.constructs.cache`).
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constructs import generated_secret


class Secrets(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        removal_policy: RemovalPolicy,
        sentry_dsn_secret_arn: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.sentry: secretsmanager.ISecret | None = (
            secretsmanager.Secret.from_secret_complete_arn(self, "SentryDsn", sentry_dsn_secret_arn)
            if sentry_dsn_secret_arn
            else None
        )
        self.cursor = generated_secret(
            self,
            "CursorKey",
            description=f"Underlay {stage}: HMAC key that signs list cursors",
            key="value",
            rotation="Rotating the cursor key only invalidates cursors handed out before the rotation (clients "
            "restart the listing); rotate it by deleting the generated value and redeploying.",
            removal_policy=removal_policy,
        )

    def grant_sentry(self, grantee: iam.IGrantable) -> None:
        if self.sentry is not None:
            self.sentry.grant_read(grantee)
