from __future__ import annotations

import json

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from underlay import declaration


class Messaging(Construct):
    """Job queues per priority with DLQs, the event bus, and the declared schedules (EventBridge Scheduler)."""

    def __init__(self, scope: Construct, id: str, *, stage: str) -> None:
        super().__init__(scope, id)
        self.queues: dict[str, sqs.Queue] = {}
        self.dlqs: dict[str, sqs.Queue] = {}
        for spec in declaration.QUEUES:
            dlq = sqs.Queue(
                self,
                f"Dlq-{spec.name}",
                retention_period=Duration.days(14),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
            )
            self.dlqs[spec.name] = dlq
            self.queues[spec.name] = sqs.Queue(
                self,
                f"Queue-{spec.name}",
                visibility_timeout=Duration.seconds(spec.visibility_timeout_s),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=spec.max_receive_count),
            )
        self.bus = events.EventBus(self, "Bus", event_bus_name=f"{declaration.EVENT_BUS}-{stage}")
        role = iam.Role(self, "SchedulerRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"))
        target = self.queues["jobs-normal"]
        target.grant_send_messages(role)
        for schedule in declaration.SCHEDULES:
            scheduler.CfnSchedule(
                self,
                f"Schedule-{schedule.name}",
                schedule_expression=f"cron({schedule.cron})",
                schedule_expression_timezone=schedule.timezone,
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=target.queue_arn,
                    role_arn=role.role_arn,
                    input=json.dumps(
                        {
                            "type": schedule.job_type,
                            "payload": dict(schedule.payload),
                            "schedule": schedule.name,
                        }
                    ),
                ),
            )
