"""Queues with their DLQs, the event bus, and the recurring schedules."""

from __future__ import annotations

import json

from underlay import declaration
from underlay.jobs import schedules

from tests.infra.conftest import Synth, get_att


def test_one_queue_per_declaration_with_a_dlq_and_six_times_the_worker_timeout(synth: Synth) -> None:
    messaging = synth.stack.messaging
    # On-failure queues of stream consumers (tests/infra/test_audit.py) and topic subscribers (test_email.py).
    failures = [*synth.stack.data.stream_dlqs.values(), *messaging.topic_dlqs.values()]
    assert len(synth.resources("AWS::SQS::Queue")) == 2 * len(declaration.QUEUES) + len(failures)
    for spec in declaration.QUEUES:
        queue = synth.props(synth.logical_id(messaging.queues[spec.name]))
        dlq_id = synth.logical_id(messaging.dlqs[spec.name])
        assert queue["VisibilityTimeout"] == spec.visibility_timeout_s == 6 * spec.worker_timeout_s
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": get_att(dlq_id),
            "maxReceiveCount": spec.max_receive_count,
        }
        assert queue["QueueName"] == f"{synth.config.stage}-underlay-{spec.name}"
        dlq = synth.props(dlq_id)
        assert dlq["QueueName"] == f"{synth.config.stage}-underlay-{spec.dlq_name}"
        assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
        for props in (queue, dlq):
            assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props


def test_every_queue_denies_plain_http(synth: Synth) -> None:
    protected = set()
    for policy in synth.resources("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {
                "Bool": {"aws:SecureTransport": "false"}
            }:
                protected.update(q["Ref"] for q in policy["Properties"]["Queues"])
    assert protected == set(synth.resources("AWS::SQS::Queue"))


def test_the_event_bus_is_named_for_the_stage(synth: Synth) -> None:
    (bus,) = synth.resources("AWS::Events::EventBus").values()
    assert bus["Properties"]["Name"] == f"{synth.config.stage}-{declaration.EVENT_BUS}"


def test_declared_schedules_become_scheduler_schedules(synth: Synth) -> None:
    assert len(synth.resources("AWS::Scheduler::Schedule")) == len(declaration.SCHEDULES)
    assert {"cache-statistics", "audit-digest"} <= {s.name for s in declaration.SCHEDULES}
    target = get_att(synth.logical_id(synth.stack.messaging.queues["jobs-normal"]))
    for spec in declaration.SCHEDULES:
        props = synth.props(synth.logical_id(synth.stack.messaging.schedules[spec.name]))
        assert props["Name"] == f"{synth.config.stage}-underlay-{spec.name}"
        assert props["ScheduleExpression"] == f"cron({spec.cron})"
        assert props["Target"]["Arn"] == target
        # The same message the local stack's cron sends (declared once, in the layer).
        assert json.loads(props["Target"]["Input"]) == schedules.message(spec)
        assert schedules.message(spec)["type"] == spec.job_type


def test_a_schedule_enqueues_its_job_on_cron_in_its_time_zone() -> None:
    """The path a later issue fills: built here with one schedule in a stack of its own."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.constructs.messaging import SCHEDULE_QUEUE, Messaging

    schedule = declaration.Schedule(
        name="health-snapshot",
        cron="0/5 * * * ? *",
        timezone="Europe/Berlin",
        job_type="health.snapshot",
        payload={"components": ["redis"]},
    )
    stack = cdk.Stack(cdk.App(), "ScheduleOnly")
    messaging = Messaging(
        stack, "Messaging", stage="dev", removal_policy=cdk.RemovalPolicy.DESTROY, schedules=[schedule]
    )
    template = Template.from_stack(stack).to_json()
    (props,) = [
        r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Scheduler::Schedule"
    ]
    assert props["ScheduleExpression"] == "cron(0/5 * * * ? *)"
    assert props["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target_queue = stack.get_logical_id(messaging.queues[SCHEDULE_QUEUE].node.default_child)
    role = stack.get_logical_id(messaging.scheduler_role.node.default_child)  # type: ignore[union-attr]
    assert props["Target"]["Arn"] == get_att(target_queue)
    assert props["Target"]["RoleArn"] == get_att(role)
    job = json.loads(props["Target"]["Input"])
    assert job == schedules.message(schedule)
    assert job["type"] == "health.snapshot" and job["payload"] == {"components": ["redis"]}
    assert job["schedule"] == "health-snapshot"
