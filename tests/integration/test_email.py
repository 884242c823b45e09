"""E-mail on moto: `email.send` through the real worker path into SES, the suppression list fed by SES
notifications through SNS, and enqueue-time validation."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import underlay.email.jobs  # noqa: F401  (registers email.send until JOB_MODULES lists it)
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from underlay import declaration, jobs
from underlay.email import suppression
from underlay.errors import ValidationFailedError

from tests.conftest import http_event, run_queue

FROM = "no-reply@underlay.example"
WELCOME = {"name": "Ada", "product": "Underlay"}


@pytest.fixture
def env(aws: dict[str, str], clean_env: pytest.MonkeyPatch) -> dict[str, str]:
    clean_env.setenv("UNDERLAY_EMAIL__FROM_ADDRESS", FROM)
    clean_env.setenv("UNDERLAY_EMAIL__FROM_NAME", "Underlay")
    ses().verify_email_identity(EmailAddress=FROM)
    return aws


def ses() -> Any:
    return boto3.client("ses", region_name="us-east-1")


def sent() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def drain(env: dict[str, str], queue: str = "jobs-normal") -> list[dict[str, Any]]:
    return run_queue(env, queue, rounds=5)


def sns_event(*notifications: dict[str, Any] | str) -> dict[str, Any]:
    """SES notifications as the SNS → Lambda event that carries them."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:email-events:sub",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": f"sns-{i}",
                    "TopicArn": "arn:aws:sns:us-east-1:123456789012:email-events",
                    "Message": n if isinstance(n, str) else json.dumps(n),
                    "Timestamp": "2025-01-01T00:00:00.000Z",
                },
            }
            for i, n in enumerate(notifications)
        ]
    }


def bounce(kind: str, *addresses: str) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind,
            "bounceSubType": "General" if kind == "Permanent" else "MailboxFull",
            "bouncedRecipients": [
                {"emailAddress": a, "status": "5.1.1", "action": "failed"} for a in addresses
            ],
            "timestamp": "2025-01-01T00:00:00.000Z",
            "feedbackId": "0100-bounce",
        },
        "mail": {"messageId": "m-1", "source": FROM, "destination": list(addresses)},
    }


def complaint(*addresses: str) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": a} for a in addresses],
            "complaintFeedbackType": "abuse",
            "timestamp": "2025-01-01T00:00:00.000Z",
            "feedbackId": "0100-complaint",
        },
        "mail": {"messageId": "m-2", "source": FROM, "destination": list(addresses)},
    }


def notify(*notifications: dict[str, Any] | str) -> dict[str, int]:
    from functions.email_events.app import handler

    return handler(sns_event(*notifications), None)


def test_welcome_goes_through_the_worker_to_ses(env: dict[str, str]) -> None:
    from underlay.aws import session

    requests: list[dict[str, Any]] = []
    session().events.register(
        "provide-client-params.ses.SendEmail", lambda params, **_: requests.append(params)
    )
    variables = {"name": "<b>Ada</b> & co", "product": "Underlay"}
    job_id = jobs.enqueue(
        "email.send",
        {
            "to": ["ada@example.com"],
            "template": "welcome",
            "variables": variables,
            "reply_to": "help@example.com",
        },
    )
    assert drain(env)[0]["batchItemFailures"] == []
    job = jobs.get(job_id)
    assert job["status"] == "succeeded", job.get("error")
    assert job["result"]["sent"] == ["ada@example.com"] and job["result"]["skipped"] == []
    (message,) = sent()
    assert job["result"]["message_id"] == message.id
    assert message.source == f"Underlay <{FROM}>"
    assert message.destinations["ToAddresses"] == ["ada@example.com"]
    assert message.subject == "Welcome to Underlay, <b>Ada</b> & co"  # a header: not HTML
    assert "&lt;b&gt;Ada&lt;/b&gt; &amp; co" in message.body and "<b>Ada</b>" not in message.body
    (request,) = requests
    assert request["Message"]["Body"]["Text"]["Data"].startswith("Hi <b>Ada</b> & co,\n")
    assert request["ReplyToAddresses"] == ["help@example.com"]
    assert request["Tags"] == [{"Name": "template", "Value": "welcome"}]


def test_a_permanent_bounce_suppresses_and_sending_skips_the_address(env: dict[str, str]) -> None:
    assert notify(bounce("Permanent", "Gone@Example.com")) == {"suppressed": 1, "ignored": 0}
    record = suppression.get("gone@example.com")
    assert record is not None and record["reason"] == "bounce:Permanent/General"
    assert record["feedback_id"] == "0100-bounce" and record["at"]

    job_id = jobs.enqueue(
        "email.send",
        {"to": ["GONE@example.com", "ok@example.com"], "template": "welcome", "variables": WELCOME},
    )
    drain(env)
    result = jobs.get(job_id)["result"]
    assert result["sent"] == ["ok@example.com"] and result["skipped"] == ["GONE@example.com"]
    (message,) = sent()
    assert message.destinations["ToAddresses"] == ["ok@example.com"]


def test_a_complaint_suppresses_the_address(env: dict[str, str]) -> None:
    assert notify(complaint("angry@example.com")) == {"suppressed": 1, "ignored": 0}
    record = suppression.get("angry@example.com")
    assert record is not None and record["reason"] == "complaint:abuse"
    assert suppression.suppressed(["Angry@example.com", "calm@example.com"]) == {"angry@example.com"}


def test_transient_bounces_and_other_messages_do_not_suppress(env: dict[str, str]) -> None:
    delivery = {"notificationType": "Delivery", "delivery": {"recipients": ["d@example.com"]}}
    result = notify(bounce("Transient", "full@example.com"), delivery, "not json at all")
    assert result == {"suppressed": 0, "ignored": 3}
    assert suppression.get("full@example.com") is None
    assert suppression.suppressed(["full@example.com", "d@example.com"]) == set()


def test_only_suppressed_recipients_means_nothing_is_sent(env: dict[str, str]) -> None:
    notify(complaint("a@example.com"), bounce("Permanent", "b@example.com"))
    job_id = jobs.enqueue(
        "email.send", {"to": ["a@example.com", "b@example.com"], "template": "welcome", "variables": WELCOME}
    )
    drain(env)
    job = jobs.get(job_id)
    assert job["status"] == "succeeded"
    assert job["result"] == {
        "template": "welcome",
        "sent": [],
        "skipped": ["a@example.com", "b@example.com"],
        "message_id": None,
    }
    assert sent() == []


def test_suppressions_can_expire_and_be_lifted(env: dict[str, str], clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("UNDERLAY_EMAIL__SUPPRESSION_DAYS", "30")
    notify(bounce("Permanent", "later@example.com"))
    item = boto3.client("dynamodb", region_name="us-east-1").get_item(
        TableName=env[declaration.env_name("table", "jobs")], Key=suppression.key("later@example.com")
    )["Item"]
    assert (
        int(item["expires_at"]["N"]) > 0 and not {"status", "type", "kind"} & item.keys()
    )  # out of the GSIs
    assert suppression.unsuppress("LATER@example.com") is True
    assert suppression.unsuppress("later@example.com") is False
    assert suppression.suppressed(["later@example.com"]) == set()


def test_an_invalid_address_is_refused_at_enqueue(env: dict[str, str]) -> None:
    with pytest.raises(ValidationFailedError) as bad:
        jobs.enqueue(
            "email.send",
            {"to": ["ada@example.com", "not-an-address"], "template": "welcome", "variables": WELCOME},
        )
    assert [e.field for e in bad.value.errors] == ["payload.to.1"]
    with pytest.raises(ValidationFailedError) as missing:
        jobs.enqueue(
            "email.send", {"to": ["ada@example.com"], "template": "welcome", "variables": {"name": "A"}}
        )
    assert [e.field for e in missing.value.errors] == ["payload.variables"]
    assert "product" in missing.value.errors[0].message
    assert sent() == []


def test_the_jobs_api_answers_422_naming_the_address(env: dict[str, str]) -> None:
    from functions.jobs.app import handler

    body = {"type": "email.send", "payload": {"to": ["nope"], "template": "welcome", "variables": WELCOME}}
    response = handler(http_event("POST", "/v1/jobs", scopes="jobs:write", body=body), None)
    assert response["statusCode"] == 422
    problem = json.loads(response["body"])
    assert problem["code"] == "VALIDATION_FAILED"
    assert [e["field"] for e in problem["errors"]] == ["payload.to.0"]


def test_throttling_is_retried_with_backoff(env: dict[str, str]) -> None:
    from botocore.awsrequest import AWSResponse
    from underlay.aws import session

    def throttled(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Code": "Throttling", "Message": "Maximum sending rate exceeded."}
        return AWSResponse("", 400, {}, None), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    session().events.register("before-call.ses.SendEmail", throttled)
    job_id = jobs.enqueue(
        "email.send", {"to": ["ada@example.com"], "template": "welcome", "variables": WELCOME}
    )
    response = drain(env)[0]
    job = jobs.get(job_id)
    assert len(response["batchItemFailures"]) == 1  # left on the queue, visible again after the backoff
    assert job["status"] == "pending" and job["attempts"] == 1 and "Throttling" in job["error"]
    assert 0 <= job["history"][-1]["retry_in_s"] <= 5  # the first of 5 s, 15 s, 45 s, 135 s (jittered)


def test_a_request_ses_refuses_fails_with_a_clear_error(
    env: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("UNDERLAY_EMAIL__FROM_ADDRESS", "unverified@elsewhere.example")
    job_id = jobs.enqueue(
        "email.send", {"to": ["ada@example.com"], "template": "welcome", "variables": WELCOME}
    )
    drain(env)
    job = jobs.get(job_id)
    assert job["status"] == "pending"  # the worker has no non-retryable failure yet: bounded by max_attempts
    assert job["error"].startswith("EmailRejected: SES refused the message (MessageRejected")
    assert "retrying will not help" in job["error"]
    assert sent() == []


def test_a_notification_that_cannot_be_stored_is_grouped_reported_and_retried(
    env: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    """DynamoDB refusing the suppression: the event raises (Lambda retries it), after its error group and Sentry
    heard."""
    import uuid

    from underlay import sentry
    from underlay.admin import errors
    from underlay.settings import reset_settings

    clean_env.setenv("UNDERLAY_TABLES__JOBS", "no-such-table")
    clean_env.setenv("UNDERLAY_REDIS__PREFIX", f"t{uuid.uuid4().hex[:8]}:")
    reset_settings()
    reported: list[BaseException] = []
    clean_env.setattr(sentry, "capture_exception", lambda exc, **tags: reported.append(exc))
    with pytest.raises(Exception, match="ResourceNotFoundException") as raised:
        notify(bounce("Permanent", "gone@example.com"))
    (group,), _, _ = errors.list_groups()
    assert group["source"] == "email_events" and group["count"] == 1
    assert "gone@example.com" not in json.dumps(group)  # the message is normalized and redacted
    assert reported == [raised.value]
