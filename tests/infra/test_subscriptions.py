"""Event-bus subscriptions on AWS: one rule per subscription with its pattern as declared, delivering to its
`sub-<name>` queue (undeliverable events to the DLQ), and the subscriber draining every such queue."""

from __future__ import annotations

from typing import Any

import pytest
from underlay import declaration, subscriptions

from infra.constructs.messaging import CONSUMER_BATCH_SIZE, VISIBILITY_PER_TIMEOUT
from tests.infra.conftest import Synth, as_list, get_att, ref


def _rules(synth: Synth) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in synth.resources("AWS::Events::Rule").items()}


def test_there_is_a_subscription_to_wire() -> None:
    """The tests below loop over the declared subscriptions: they must not pass by looping over none."""
    assert "audit-on-job-failure" in {s.name for s in subscriptions.SUBSCRIPTIONS}
    subscriptions.check()


def test_one_rule_per_subscription_on_the_bus_with_exactly_its_pattern(synth: Synth) -> None:
    messaging = synth.stack.messaging
    rules = _rules(synth)
    assert set(messaging.subscription_rules) == {s.name for s in subscriptions.SUBSCRIPTIONS}
    assert set(rules) == {synth.logical_id(r) for r in messaging.subscription_rules.values()}
    for sub in subscriptions.SUBSCRIPTIONS:
        rule = rules[synth.logical_id(messaging.subscription_rules[sub.name])]
        assert rule["EventBusName"] == ref(synth.logical_id(messaging.bus)), sub.name
        assert rule["EventPattern"] == sub.pattern, sub.name  # nothing added, nothing renamed
        assert rule["State"] == "ENABLED"
    failure = rules[synth.logical_id(messaging.subscription_rules["audit-on-job-failure"])]
    assert failure["EventPattern"] == {"source": ["underlay.jobs"], "detail-type": ["BackgroundJobFailed"]}


def test_a_rule_targets_its_queue_and_sends_undeliverable_events_to_the_dlq(synth: Synth) -> None:
    messaging = synth.stack.messaging
    for sub in subscriptions.SUBSCRIPTIONS:
        (target,) = synth.props(synth.logical_id(messaging.subscription_rules[sub.name]))["Targets"]
        assert target["Arn"] == get_att(synth.logical_id(messaging.queues[sub.queue_name])), sub.name
        assert target["DeadLetterConfig"] == {
            "Arn": get_att(synth.logical_id(messaging.dlqs[sub.queue_name]))
        }, sub.name
        assert (
            "Input" not in target and "InputTransformer" not in target
        )  # the whole event, as dispatch wants


def _allows(synth: Synth, queue_id: str) -> list[dict[str, Any]]:
    return [
        s
        for policy in synth.resources("AWS::SQS::QueuePolicy").values()
        if ref(queue_id) in policy["Properties"]["Queues"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]


def test_only_its_rule_may_send_to_a_subscription_queue_and_its_dlq(synth: Synth) -> None:
    messaging = synth.stack.messaging
    for sub in subscriptions.SUBSCRIPTIONS:
        rule_arn = get_att(synth.logical_id(messaging.subscription_rules[sub.name]))
        for queue in (messaging.queues[sub.queue_name], messaging.dlqs[sub.queue_name]):
            (statement,) = _allows(synth, synth.logical_id(queue))
            assert statement["Principal"] == {"Service": "events.amazonaws.com"}
            assert "sqs:SendMessage" in as_list(statement["Action"])
            assert set(as_list(statement["Action"])) <= {
                "sqs:SendMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
            }
            assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn}}, sub.name
            assert statement["Resource"] == get_att(synth.logical_id(queue))
            # SQS-managed encryption: EventBridge needs no key policy to send.
            assert synth.props(synth.logical_id(queue))["SqsManagedSseEnabled"] is True


def test_job_queues_accept_nothing_from_eventbridge_rules(synth: Synth) -> None:
    messaging = synth.stack.messaging
    for name in ("jobs-high", "jobs-normal", "jobs-low"):
        for queue in (messaging.queues[name], messaging.dlqs[name]):
            principals = [s.get("Principal") for s in _allows(synth, synth.logical_id(queue))]
            assert {"Service": "events.amazonaws.com"} not in principals, name


def test_the_subscriber_drains_every_subscription_queue_with_partial_batch_responses(synth: Synth) -> None:
    subscriber = declaration.function("subscriber")
    assert set(subscriber.consumes) == {s.queue_name for s in subscriptions.SUBSCRIPTIONS}
    fn = ref(synth.logical_id(synth.stack.functions.functions["subscriber"]))
    mappings = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == fn
    }
    queues = synth.stack.messaging.queues
    assert set(mappings) == {synth.logical_id(queues[s.queue_name]) for s in subscriptions.SUBSCRIPTIONS}
    timeout = synth.props(fn["Ref"])["Timeout"]
    assert timeout == declaration.SUBSCRIBER_TIMEOUT_S
    for sub in subscriptions.SUBSCRIPTIONS:
        queue_id = synth.logical_id(queues[sub.queue_name])
        mapping = mappings[queue_id]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], sub.name
        assert mapping["BatchSize"] == CONSUMER_BATCH_SIZE
        queue = synth.props(queue_id)
        assert queue["VisibilityTimeout"] >= VISIBILITY_PER_TIMEOUT * timeout, sub.name
        # The subscription's own retry cap: after that many receives a failing event goes to the DLQ.
        assert queue["RedrivePolicy"]["maxReceiveCount"] == sub.max_receive_count, sub.name


def _standalone(subs: tuple[subscriptions.Subscription, ...], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Messaging construct alone, with these subscriptions declared (and their queues)."""
    import aws_cdk as cdk

    from infra.constructs.messaging import Messaging

    queues = tuple(q for q in declaration.QUEUES if not q.name.startswith("sub-")) + tuple(
        declaration.Queue(s.queue_name, max_receive_count=s.max_receive_count, worker_timeout_s=60)
        for s in subs
    )
    monkeypatch.setattr(subscriptions, "SUBSCRIPTIONS", subs)
    monkeypatch.setattr(declaration, "QUEUES", queues)
    stack = cdk.Stack(cdk.App(), "SubscriptionsOnly")
    return stack, Messaging(
        stack, "Messaging", stage="dev", removal_policy=cdk.RemovalPolicy.DESTROY, schedules=[]
    )


def test_operators_and_or_reach_eventbridge_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    from aws_cdk.assertions import Template

    pattern = {
        "source": [{"prefix": "underlay."}],
        "detail-type": ["FeatureFlagToggled", "FeatureFlagArchived"],
        "detail": {"tier": [{"anything-but": ["free"]}], "attempts": [{"numeric": [">", 2]}]},
        "$or": [{"detail": {"tenant": [{"exists": True}]}}, {"account": ["123456789012"]}],
    }
    sub = subscriptions.Subscription("flag-changes", pattern=pattern, handler="x.y:z")
    stack, messaging = _standalone((sub,), monkeypatch)
    template = Template.from_stack(stack).to_json()
    (rule,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["EventPattern"] == pattern
    assert set(messaging.subscription_rules) == {"flag-changes"}


def test_a_bad_subscription_fails_the_synth(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = subscriptions.Subscription("typo", pattern={"source": [{"prefixx": "a"}]}, handler="x.y:z")
    with pytest.raises(ValueError, match="prefixx"):
        _standalone((bad,), monkeypatch)
