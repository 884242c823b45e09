"""Background jobs on AWS: the worker's SQS event sources, the queues' visibility, one-time schedules for the
jobs API (group, role, grants, settings) and the queue grants both ends of a job need."""

from __future__ import annotations

import json
from typing import Any

import pytest
from underlay import declaration

from infra.constructs.messaging import (
    CONSUMER_BATCH_SIZE,
    JOB_SCHEDULE_ACTIONS,
    JOB_SCHEDULER_GROUP_ENV,
    JOB_SCHEDULER_ROLE_ENV,
    VISIBILITY_PER_TIMEOUT,
    job_queue_names,
)
from tests.infra.conftest import Synth, all_statements, allowed, arn, as_list, get_att, ref, role_statements


def _queue_spec(name: str) -> declaration.Queue:
    return next(q for q in declaration.QUEUES if q.name == name)


def _sqs_mappings(synth: Synth) -> dict[str, dict[str, Any]]:
    """SQS event source mappings by the logical ID of their queue."""
    found = {}
    for mapping in synth.resources("AWS::Lambda::EventSourceMapping").values():
        source = mapping["Properties"]["EventSourceArn"]
        if isinstance(source, dict) and "Fn::GetAtt" in source:
            logical_id, attribute = source["Fn::GetAtt"]
            if synth.template["Resources"][logical_id]["Type"] == "AWS::SQS::Queue":
                assert attribute == "Arn"
                found[logical_id] = dict(mapping["Properties"])
    return found


def _env(synth: Synth, function: str) -> dict[str, Any]:
    fn = synth.props(synth.logical_id(synth.stack.functions.functions[function]))
    return dict(fn["Environment"]["Variables"])


def _job_queues() -> set[str]:
    """Every declared queue but the event-bus subscriptions' `sub-<name>` queues."""
    return {q.name for q in declaration.QUEUES if not q.name.startswith("sub-")}


def _mappings_of(synth: Synth, function: str) -> dict[str, dict[str, Any]]:
    fn = ref(synth.logical_id(synth.stack.functions.functions[function]))
    return {q: m for q, m in _sqs_mappings(synth).items() if m["FunctionName"] == fn}


def test_the_worker_consumes_every_job_queue_with_partial_batch_responses(synth: Synth) -> None:
    worker = declaration.function("worker")
    assert set(worker.consumes) == _job_queues() == {"jobs-high", "jobs-normal", "jobs-low"}
    assert job_queue_names() == ("jobs-high", "jobs-normal", "jobs-low")
    queues = synth.stack.messaging.queues
    mappings = _mappings_of(synth, "worker")
    assert set(mappings) == {synth.logical_id(queues[name]) for name in worker.consumes}
    for name in worker.consumes:
        mapping = mappings[synth.logical_id(queues[name])]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
        assert mapping["BatchSize"] == CONSUMER_BATCH_SIZE == 10, name
        assert 0 < mapping["MaximumBatchingWindowInSeconds"] <= 5, name
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": _queue_spec(name).max_concurrency}, name


def test_high_priority_jobs_get_the_most_workers(synth: Synth) -> None:
    queues = synth.stack.messaging.queues
    mappings = _sqs_mappings(synth)
    concurrency = {
        name: mappings[synth.logical_id(queues[name])]["ScalingConfig"]["MaximumConcurrency"]
        for name in ("jobs-high", "jobs-normal", "jobs-low")
    }
    assert concurrency == {"jobs-high": 10, "jobs-normal": 5, "jobs-low": 2}


def test_visibility_is_at_least_six_times_the_consuming_function_timeout(synth: Synth) -> None:
    """Read from the template, for every SQS event source: a message is never handed to a second invocation
    while the first can still be running."""
    mappings = _sqs_mappings(synth)
    assert len(mappings) >= len(declaration.QUEUES)
    for queue_id, mapping in mappings.items():
        visibility = synth.props(queue_id)["VisibilityTimeout"]
        timeout = synth.props(mapping["FunctionName"]["Ref"])["Timeout"]
        assert visibility >= VISIBILITY_PER_TIMEOUT * timeout == 6 * timeout, queue_id
    assert synth.props(synth.logical_id(synth.stack.functions.functions["worker"]))["Timeout"] == 300


def test_a_consumer_slower_than_a_sixth_of_the_visibility_is_refused() -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_

    from infra.constructs.messaging import Messaging

    stack = cdk.Stack(cdk.App(), "SlowConsumer")
    messaging = Messaging(
        stack, "Messaging", stage="dev", removal_policy=cdk.RemovalPolicy.DESTROY, schedules=[]
    )
    fn = lambda_.Function(
        stack,
        "Fn",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context): pass"),
    )
    queue = declaration.QUEUES[0]
    with pytest.raises(ValueError, match="visibility timeout"):
        messaging.add_consumer(fn, queue.name, timeout_s=queue.worker_timeout_s + 1)
    with pytest.raises(ValueError, match="undeclared queue"):
        messaging.add_consumer(fn, "jobs-urgent", timeout_s=1)
    messaging.add_consumer(fn, queue.name, timeout_s=queue.worker_timeout_s)  # exactly 6x is enough


def test_one_time_schedules_have_a_group_of_their_own(synth: Synth) -> None:
    (group,) = synth.resources("AWS::Scheduler::ScheduleGroup").values()
    assert group["Properties"]["Name"] == f"{synth.config.stage}-underlay-jobs"
    assert synth.stack.messaging.job_schedule_group_name == group["Properties"]["Name"]


def _schedules_in_group(synth: Synth) -> str:
    group = synth.stack.messaging.job_schedule_group_name
    return json.dumps(
        {
            "Fn::Join": [
                "",
                [
                    "arn:",
                    {"Ref": "AWS::Partition"},
                    ":scheduler:",
                    {"Ref": "AWS::Region"},
                    ":",
                    {"Ref": "AWS::AccountId"},
                    f":schedule/{group}/*",
                ],
            ]
        },
        sort_keys=True,
    )


def test_the_jobs_api_manages_schedules_in_its_group_only(synth: Synth) -> None:
    assert declaration.Grant("scheduler", "*", "write") in declaration.function("jobs").grants
    assert allowed(role_statements(synth, "jobs"), "scheduler:") == {
        action: {_schedules_in_group(synth)} for action in JOB_SCHEDULE_ACTIONS
    }
    assert set(JOB_SCHEDULE_ACTIONS) == {
        "scheduler:CreateSchedule",
        "scheduler:DeleteSchedule",
        "scheduler:GetSchedule",
    }
    for spec in declaration.FUNCTIONS:
        if not any(g.kind == "scheduler" for g in spec.grants):
            assert not allowed(role_statements(synth, spec.name), "scheduler:"), spec.name


def test_the_jobs_api_may_pass_only_the_job_scheduler_role_and_only_to_scheduler(synth: Synth) -> None:
    role = get_att(synth.logical_id(synth.stack.messaging.job_scheduler_role))
    passes = [s for s in role_statements(synth, "jobs") if "iam:PassRole" in as_list(s["Action"])]
    assert passes == [
        {
            "Action": "iam:PassRole",
            "Condition": {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
            "Effect": "Allow",
            "Resource": role,
        }
    ]
    jobs_role = ref(synth.props(_fn(synth, "jobs"))["Role"]["Fn::GetAtt"][0])
    for owner, statement in all_statements(synth):
        if "iam:PassRole" in as_list(statement["Action"]):
            assert synth.props(owner).get("Roles") == [jobs_role], f"{owner} may pass a role"


def _fn(synth: Synth, name: str) -> str:
    return synth.logical_id(synth.stack.functions.functions[name])


def test_the_job_scheduler_role_is_for_the_group_and_sends_to_the_job_queues_only(synth: Synth) -> None:
    messaging = synth.stack.messaging
    role_id = synth.logical_id(messaging.job_scheduler_role)
    (trust,) = synth.props(role_id)["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"},
            "aws:SourceArn": get_att(synth.logical_id(messaging.job_schedule_group)),
        }
    }
    statements = [
        s
        for policy in synth.resources("AWS::IAM::Policy").values()
        if ref(role_id) in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    sqs = allowed(statements, "sqs:")
    # A job's priority picks its queue; a subscription's queue is filled by its rule, never by a job.
    assert sqs.pop("sqs:SendMessage") == {arn(synth, messaging.queues[name]) for name in _job_queues()}
    assert set(sqs) <= {"sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
    actions = {a for s in statements for a in as_list(s["Action"])}
    assert {a.split(":")[0] for a in actions} == {"sqs"}


def test_the_jobs_api_is_told_its_schedule_group_and_role(synth: Synth) -> None:
    messaging = synth.stack.messaging
    env = _env(synth, "jobs")
    assert (JOB_SCHEDULER_GROUP_ENV, JOB_SCHEDULER_ROLE_ENV) == (
        "UNDERLAY_JOBS__SCHEDULER_GROUP",  # JobsSettings.scheduler_group
        "UNDERLAY_JOBS__SCHEDULER_ROLE_ARN",  # JobsSettings.scheduler_role_arn
    )
    assert env[JOB_SCHEDULER_GROUP_ENV] == f"{synth.config.stage}-underlay-jobs"
    assert env[JOB_SCHEDULER_ROLE_ENV] == get_att(synth.logical_id(messaging.job_scheduler_role))
    for spec in declaration.FUNCTIONS:
        if spec.name != "jobs":
            assert not {JOB_SCHEDULER_GROUP_ENV, JOB_SCHEDULER_ROLE_ENV} & set(_env(synth, spec.name)), (
                spec.name
            )


def test_the_worker_retries_with_visibility_and_sends_last_failures_to_the_dlqs(synth: Synth) -> None:
    messaging = synth.stack.messaging
    sqs = allowed(role_statements(synth, "worker"), "sqs:")
    for name in declaration.function("worker").consumes:
        queue, dlq = arn(synth, messaging.queues[name]), arn(synth, messaging.dlqs[name])
        assert {queue, dlq} <= sqs["sqs:SendMessage"], name
        assert queue in sqs["sqs:ChangeMessageVisibility"], name
        assert queue in sqs["sqs:DeleteMessage"], name


def test_the_jobs_api_peeks_at_and_redrives_the_dlqs(synth: Synth) -> None:
    messaging = synth.stack.messaging
    sqs = allowed(role_statements(synth, "jobs"), "sqs:")
    for spec in declaration.QUEUES:
        queue, dlq = arn(synth, messaging.queues[spec.name]), arn(synth, messaging.dlqs[spec.name])
        if not spec.name.startswith("jobs-"):  # subscription queues are the subscriber's alone
            assert queue not in sqs.get("sqs:SendMessage", set()), spec.name
            continue
        assert queue in sqs["sqs:SendMessage"], spec.name
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
            assert dlq in sqs[action], (spec.name, action)
