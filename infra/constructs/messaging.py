"""Jobs and events: the job queues with their dead-letter queues and consumers, the event bus with one rule per
event-bus subscription (each filling its `sub-<name>` queue), the declared SNS topics and their subscribers, the
recurring schedules, and the schedule group the jobs API puts one-time schedules in (jobs more than 15 minutes
ahead)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from underlay import declaration
from underlay import subscriptions as bus_subscriptions
from underlay.jobs import schedules as job_schedules

from infra.constructs import acknowledge, on_failure_queue

SCHEDULE_QUEUE = "jobs-normal"  # where scheduled jobs are enqueued
# A consumer's message stays invisible this many times its function's timeout, so a message whose invocation
# is still running (or retrying inside Lambda) is never handed to a second one (SPEC: visibility >= 6x).
VISIBILITY_PER_TIMEOUT = 6
CONSUMER_BATCH_SIZE = 10
# Waiting a little for fuller batches saves invocations under load; a second keeps a high-priority job's wait
# far below anything a caller would notice.
CONSUMER_BATCHING_WINDOW = Duration.seconds(1)
# What the jobs API may do with the one-time schedules in its group (`underlay.jobs._send` and `delete`).
JOB_SCHEDULE_ACTIONS = ("scheduler:CreateSchedule", "scheduler:DeleteSchedule", "scheduler:GetSchedule")
JOB_SCHEDULER_GROUP_ENV = "UNDERLAY_JOBS__SCHEDULER_GROUP"
JOB_SCHEDULER_ROLE_ENV = "UNDERLAY_JOBS__SCHEDULER_ROLE_ARN"
# SNS invokes a subscribed function asynchronously: Lambda retries a failing invocation this many times, then
# the notification goes to the consumer's on-failure queue (as does one SNS could not deliver at all).
TOPIC_CONSUMER_RETRY_ATTEMPTS = 2
TOPIC_CONSUMER_MAX_EVENT_AGE = Duration.hours(6)


def subscription_queue_names() -> frozenset[str]:
    """The `sub-<name>` queues event-bus subscriptions fill (the rest of `declaration.QUEUES` carry jobs)."""
    return frozenset(s.queue_name for s in bus_subscriptions.SUBSCRIPTIONS)


def job_queue_names() -> tuple[str, ...]:
    """The declared queues that carry background jobs, in declaration order."""
    subs = subscription_queue_names()
    return tuple(q.name for q in declaration.QUEUES if q.name not in subs)


def is_job_worker(spec: declaration.Function) -> bool:
    """A function that consumes a job queue: it may run any job type (`audit.digest`, `health.snapshot`)."""
    return bool(set(spec.consumes) & set(job_queue_names()))


class Messaging(Construct):
    """One SQS queue per declared queue (with its DLQ), the custom event bus, and one schedule per declared one.

    Queues use SQS-managed encryption: encrypted at rest with no key policy for EventBridge Scheduler,
    EventBridge rules, SNS or consumers to get right, and no KMS request charges per message.

    Each event-bus subscription (`underlay.subscriptions`) is a rule on the bus with the subscription's pattern,
    verbatim, whose target is its `sub-<name>` queue; an event the rule cannot deliver goes to that queue's DLQ.

    Declared SNS topics are encrypted with a key of their own (`topic_key`): the AWS-managed SNS key cannot
    be shared with a publishing service such as SES, whose access to this key is granted where that publisher
    is wired (`infra/constructs/email.py`).

    One-time schedules are created at run time by the jobs API in a group of their own (`job_schedule_group`),
    and EventBridge Scheduler delivers them with `job_scheduler_role`, which only schedules in that group can
    assume. The recurring schedules keep their own role (`scheduler_role`), which reaches the normal queue only.
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
        self.subscription_rules: dict[str, events.Rule] = {}
        self._subscriptions(stage)

        self.topic_key = kms.Key(
            self,
            "TopicKey",
            alias=f"alias/underlay-{stage}-topics",
            description=f"Underlay {stage}: declared SNS topics ({', '.join(declaration.TOPICS)})",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.topics: dict[str, sns.Topic] = {
            name: sns.Topic(
                self,
                f"Topic-{name}",
                topic_name=f"{stage}-underlay-{name}",
                master_key=self.topic_key,
                enforce_ssl=True,  # a Deny on publishing and subscribing without TLS
            )
            for name in declaration.TOPICS
        }
        self.topic_dlqs: dict[str, sqs.Queue] = {}  # consuming function -> its on-failure queue
        self._stage, self._removal_policy = stage, removal_policy
        self.job_schedule_group_name = f"{stage}-underlay-jobs"
        self.job_schedule_group, self.job_scheduler_role = self._one_time_schedules(stage, removal_policy)

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
            job = job_schedules.message(spec)  # what the local stack's cron puts on the queue too
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

    def _one_time_schedules(
        self, stage: str, removal_policy: RemovalPolicy
    ) -> tuple[scheduler.CfnScheduleGroup, iam.Role]:
        group = scheduler.CfnScheduleGroup(self, "JobScheduleGroup", name=self.job_schedule_group_name)
        group.apply_removal_policy(removal_policy)  # deleting a group deletes the schedules in it
        # Confused-deputy guard: Scheduler names the schedule group as the source when it assumes the role.
        role = iam.Role(
            self,
            "JobSchedulerRole",
            description=f"Underlay {stage}: EventBridge Scheduler enqueues jobs that were due later than 15 min",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={
                    "StringEquals": {
                        "aws:SourceAccount": Aws.ACCOUNT_ID,
                        "aws:SourceArn": group.attr_arn,
                    }
                },
            ),
        )
        for name in job_queue_names():  # a job's priority picks its queue; never a subscription's queue
            self.queues[name].grant_send_messages(role)
        return group, role

    def _subscriptions(self, stage: str) -> None:
        """One rule per subscription: its pattern as declared (so `detail-type`, `$or` and every operator reach
        EventBridge untouched), its queue as the target, and the queue's DLQ for events it cannot deliver.

        The SqsQueue target adds the queue policy letting events.amazonaws.com send, for this rule's ARN only
        (on the DLQ too); SQS-managed encryption needs no key policy for it."""
        # Bad names, handlers or patterns fail the synth, not the first event (passed explicitly: check's
        # default is bound when the module is imported).
        bus_subscriptions.check(bus_subscriptions.SUBSCRIPTIONS)
        for sub in bus_subscriptions.SUBSCRIPTIONS:
            queue, dlq = self.queues[sub.queue_name], self.dlqs[sub.queue_name]
            rule = events.Rule(
                self,
                f"Subscription-{sub.name}",
                event_bus=self.bus,
                description=f"Underlay {stage} subscription {sub.name}: {sub.description}"[:512],
                # A stand-in for the L2's validation (a rule needs a pattern); replaced by the declared one below.
                event_pattern=events.EventPattern(account=[Aws.ACCOUNT_ID]),
                targets=[targets.SqsQueue(queue, dead_letter_queue=dlq)],
            )
            cfn_rule = rule.node.default_child
            if not isinstance(cfn_rule, events.CfnRule):
                raise TypeError(f"{rule.node.path} has no AWS::Events::Rule of its own")
            # Replaced, not merged: a property override deep-merges into the stand-in and would keep its keys.
            cfn_rule.event_pattern = json.loads(json.dumps(sub.pattern))
            self.subscription_rules[sub.name] = rule

    # --- topic subscribers, called by the stack for each function that declares `topic` ---------------------

    def add_topic_subscriber(self, fn: lambda_.Function, topic: str, *, function_name: str) -> sqs.Queue:
        """Notifications on `topic` invoke `fn` (declared as `function_name`). A notification that SNS cannot
        deliver, or whose invocation still fails after Lambda's retries, lands in a queue of its own (alarmed
        like every DLQ), with the notification itself."""
        if topic not in self.topics:
            raise ValueError(f"{function_name} subscribes to undeclared topic {topic!r}")
        dlq = on_failure_queue(
            self,
            f"TopicDlq-{function_name}",
            name=f"{self._stage}-underlay-{function_name}-topic-dlq",
            removal_policy=self._removal_policy,
            holds=f"keeps the {topic} notifications {function_name} could not take or process, to replay once "
            "the cause is fixed",
        )
        # SNS's own redrive (notifications it could not deliver): a queue policy for this topic's ARN only.
        fn.add_event_source(event_sources.SnsEventSource(self.topics[topic], dead_letter_queue=dlq))
        # Invocations that keep failing in the function (the role gets sqs:SendMessage on this queue only).
        fn.configure_async_invoke(
            on_failure=destinations.SqsDestination(dlq),
            retry_attempts=TOPIC_CONSUMER_RETRY_ATTEMPTS,
            max_event_age=TOPIC_CONSUMER_MAX_EVENT_AGE,
        )
        self.topic_dlqs[function_name] = dlq
        return dlq

    # --- consumers, called by the stack for each queue a declared function `consumes` ----------------------

    def add_consumer(self, fn: lambda_.Function, name: str, *, timeout_s: int) -> None:
        """Messages on queue `name` invoke `fn` (whose timeout is `timeout_s`), with partial batch responses:
        only the messages the function reports as failed come back, each after its own backoff."""
        spec = next((q for q in declaration.QUEUES if q.name == name), None)
        if spec is None:
            raise ValueError(f"{fn.node.id} consumes undeclared queue {name!r}")
        if spec.visibility_timeout_s < VISIBILITY_PER_TIMEOUT * timeout_s:
            raise ValueError(
                f"queue {name!r}: visibility timeout {spec.visibility_timeout_s}s is under "
                f"{VISIBILITY_PER_TIMEOUT}x the {timeout_s}s timeout of its consumer; raise worker_timeout_s"
            )
        fn.add_event_source(
            event_sources.SqsEventSource(
                self.queues[name],
                batch_size=CONSUMER_BATCH_SIZE,
                max_batching_window=CONSUMER_BATCHING_WINDOW,
                report_batch_item_failures=True,
                max_concurrency=spec.max_concurrency,  # per queue: more for high, fewer for low
            )
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
            # Both ends of the queue and of its DLQ: the worker changes visibility (backoff) and sends a job's
            # last failure to the DLQ itself; the jobs API peeks at the DLQ and redrives it.
            for q in (queue, dlq):
                q.grant_send_messages(grantee)
                q.grant_consume_messages(grantee)

    def grant_job_schedules(self, fn: lambda_.Function, access: declaration.Access) -> None:
        """One-time schedules in the jobs group: create, delete and look up, delivered by the job scheduler
        role, which `fn` may pass to Scheduler and to nothing else."""
        writes = access not in ("read", "describe")
        actions = JOB_SCHEDULE_ACTIONS if writes else ("scheduler:GetSchedule",)
        schedules_arn = Stack.of(self).format_arn(
            service="scheduler",
            resource="schedule",
            resource_name=f"{self.job_schedule_group_name}/*",
        )
        iam.Grant.add_to_principal(grantee=fn, actions=list(actions), resource_arns=[schedules_arn])
        fn.add_environment(JOB_SCHEDULER_GROUP_ENV, self.job_schedule_group_name)
        if writes:
            fn.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["iam:PassRole"],
                    resources=[self.job_scheduler_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
                )
            )
            fn.add_environment(JOB_SCHEDULER_ROLE_ENV, self.job_scheduler_role.role_arn)
        if fn.role is not None:
            acknowledge(
                fn.role,
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:"
                f"schedule/{self.job_schedule_group_name}/*]",
                "One-time schedules are named job-<ULID> at run time, one per job due later than 15 minutes; "
                f"the grant covers schedules in the {self.job_schedule_group_name} group only, never the "
                "recurring ones or another group.",
            )

    def grant_bus(self, grantee: iam.IGrantable, access: declaration.Access) -> None:
        if access != "describe":
            self.bus.grant_put_events_to(grantee)
