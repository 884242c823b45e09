"""E-mail through SES: the configuration set every `email.send` message goes out with, whose event destination
publishes bounces and complaints to the declared `email-events` topic (the `email_events` function turns them
into suppressions), and the send permission for the functions declared with an `email` grant.

SES publishes to the topic as `ses.amazonaws.com`. The topic is encrypted with the topics' customer managed
key (`Messaging.topic_key`), so that key's policy lets SES generate and decrypt data keys; with the AWS-managed
SNS key, whose policy cannot name SES, the notifications would be dropped without an error anywhere. The topic
policy lets SES publish for this account and this configuration set only.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ses as ses
from aws_cdk import aws_sns as sns
from constructs import Construct
from underlay import declaration

EVENTS_TOPIC = "email-events"  # declaration.TOPICS
# EmailSettings (underlay.email.settings): UNDERLAY_EMAIL__...
FROM_ADDRESS_ENV = "UNDERLAY_EMAIL__FROM_ADDRESS"
FROM_NAME_ENV = "UNDERLAY_EMAIL__FROM_NAME"
CONFIGURATION_SET_ENV = "UNDERLAY_EMAIL__CONFIGURATION_SET"
# `underlay.email.jobs.deliver` calls SES v1 SendEmail; SendRawEmail is the same permission for raw MIME.
SEND_ACTIONS = ("ses:SendEmail", "ses:SendRawEmail")
# What the suppression list is fed with; deliveries, opens and clicks are not published at all.
PUBLISHED_EVENTS = (ses.EmailSendingEvent.BOUNCE, ses.EmailSendingEvent.COMPLAINT)


class Email(Construct):
    """The configuration set `<stage>-underlay` with its SNS event destination, and SES send grants.

    `from_address` comes from the stage config (`email.from_address`); without it nobody may send, and the
    functions that would are told only the configuration set (the `email.send` job then fails with a clear
    configuration error rather than an access denied).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        topic: sns.ITopic,
        topic_key: kms.IKey,
        from_address: str | None,
        from_name: str | None,
    ) -> None:
        super().__init__(scope, id)
        if EVENTS_TOPIC not in declaration.TOPICS:
            raise ValueError(f"the {EVENTS_TOPIC!r} topic SES publishes to is not declared")
        self.from_address, self.from_name = from_address, from_name
        self.configuration_set_name = f"{stage}-underlay"
        self.configuration_set = ses.ConfigurationSet(
            self,
            "ConfigurationSet",
            configuration_set_name=self.configuration_set_name,
            reputation_metrics=True,  # bounce and complaint rates in CloudWatch, per configuration set
        )
        self.event_destination = self.configuration_set.add_event_destination(
            "Events",
            configuration_set_event_destination_name="bounces-and-complaints",
            destination=ses.EventDestination.sns_topic(topic),
            events=list(PUBLISHED_EVENTS),
        )
        self.configuration_set_arn = Stack.of(self).format_arn(
            service="ses", resource="configuration-set", resource_name=self.configuration_set_name
        )
        # The SNS destination adds the topic policy itself: sns:Publish for ses.amazonaws.com, conditioned on
        # this account and this configuration set's ARN, and makes the destination depend on it. What it cannot
        # do is the key: publishing to an SSE-KMS topic, SNS asks KMS for a data key on SES's behalf.
        topic_key.grant(iam.ServicePrincipal("ses.amazonaws.com"), "kms:GenerateDataKey*", "kms:Decrypt")

    def identity_arns(self) -> list[str]:
        """The SES identities the from-address may be verified as: the address itself, or its domain."""
        if not self.from_address:
            return []
        stack = Stack.of(self)
        domain = self.from_address.rpartition("@")[2]
        return [
            stack.format_arn(service="ses", resource="identity", resource_name=name)
            for name in (self.from_address, domain)
        ]

    def grant_send(self, fn: lambda_.Function, access: declaration.Access) -> None:
        """SendEmail/SendRawEmail from the configured address only, through this configuration set; and the
        settings `underlay.email` reads."""
        if access not in ("write", "read_write"):
            raise ValueError(f"an email grant sends, so its access is write, not {access!r}")
        fn.add_environment(CONFIGURATION_SET_ENV, self.configuration_set_name)
        if not self.from_address:
            return
        fn.add_environment(FROM_ADDRESS_ENV, self.from_address)
        if self.from_name:
            fn.add_environment(FROM_NAME_ENV, self.from_name)
        # SES authorizes a send on the identity and on the configuration set it names; the condition pins the
        # From address (the display name is not part of it), so a verified domain does not mean any sender.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=list(SEND_ACTIONS),
                resources=[*self.identity_arns(), self.configuration_set_arn],
                conditions={"StringEquals": {"ses:FromAddress": self.from_address}},
            )
        )
