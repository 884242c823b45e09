"""Jobs and events: the job queues with their dead-letter queues, the event bus and the recurring schedules."""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from underlay import declaration

SCHEDULE_QUEUE = "jobs-normal"  # where scheduled jobs are enqueued


class Messaging(Construct):
    """One SQS queue per declared queue (with its DLQ), the custom event bus, and one schedule per declared one.

    Queues use SQS-managed encryption: encrypted at rest with no key policy for EventBridge Scheduler or
    consumers to get right, and no KMS request charges per message.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: str,
        removal_policy: RemovalPolicy,
        schedules: Sequence[declaration.Schedule] = declaration.SCHEDULES,
    ) -> None:
        super().__init__(scope, id)
        self.queues: dict[str, sqs.Queue] = {}
        self.dlqs: dict[str, sqs.Queue] = {}
        for spec in declaration.QUEUES:
            dlq = sqs.Queue(
                self,
                f"Dlq-{spec.name}",
                queue_name=f"{stage}-underlay-{spec.dlq_name}",
                retention_period=Duration.days(14),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                removal_policy=removal_policy,
            )
            self.dlqs[spec.name] = dlq
            self.queues[spec.name] = sqs.Queue(
                self,
                f"Queue-{spec.name}",
                queue_name=f"{stage}-underlay-{spec.name}",
                visibility_timeout=Duration.seconds(spec.visibility_timeout_s),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=spec.max_receive_count),
                removal_policy=removal_policy,
            )

        self.bus = events.EventBus(self, "Bus", event_bus_name=f"{stage}-{declaration.EVENT_BUS}")

        self.schedules: dict[str, scheduler.CfnSchedule] = {}
        self.scheduler_role: iam.Role | None = None
        if schedules:
            self._schedules(stage, schedules)

    def _schedules(self, stage: str, schedules: Sequence[declaration.Schedule]) -> None:
        target, dlq = self.queues[SCHEDULE_QUEUE], self.dlqs[SCHEDULE_QUEUE]
        role = iam.Role(
            self,
            "SchedulerRole",
            description=f"Underlay {stage}: EventBridge Scheduler enqueues scheduled jobs",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
        )
        target.grant_send_messages(role)
        dlq.grant_send_messages(role)  # undeliverable invocations land next to failed jobs
        self.scheduler_role = role
        for spec in schedules:
            job = {
                "type": spec.job_type,
                "payload": dict(spec.payload),
                "priority": "normal",
                "source": "schedule",
                "schedule": spec.name,
                "overlap": spec.overlap,  # Scheduler cannot skip overlaps; the worker does, by this flag
            }
            self.schedules[spec.name] = scheduler.CfnSchedule(
                self,
                f"Schedule-{spec.name}",
                name=f"{stage}-underlay-{spec.name}",
                description=f"{spec.job_type} ({spec.cron} {spec.timezone})",
                schedule_expression=f"cron({spec.cron})",
                schedule_expression_timezone=spec.timezone,
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                state="ENABLED",
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=target.queue_arn,
                    role_arn=role.role_arn,
                    input=json.dumps(job, sort_keys=True),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                        maximum_event_age_in_seconds=3600, maximum_retry_attempts=3
                    ),
                    dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(arn=dlq.queue_arn),
                ),
            )

    # --- grants, called by the stack from each function's declared grants --------------------------------

    def grant_queue(self, grantee: iam.IGrantable, name: str, access: declaration.Access) -> None:
        queue, dlq = self.queues[name], self.dlqs[name]
        if access == "describe":
            # Depth and age for health checks, on the queue and its DLQ; no message is readable with it.
            queue.grant(grantee, "sqs:GetQueueAttributes")
            dlq.grant(grantee, "sqs:GetQueueAttributes")
        elif access == "put_only":
            queue.grant_send_messages(grantee)
        elif access == "read":
            queue.grant_consume_messages(grantee)
        else:
            queue.grant_send_messages(grantee)
            queue.grant_consume_messages(grantee)
            dlq.grant(grantee, "sqs:GetQueueAttributes")

    def grant_bus(self, grantee: iam.IGrantable, access: declaration.Access) -> None:
        if access != "describe":
            self.bus.grant_put_events_to(grantee)
