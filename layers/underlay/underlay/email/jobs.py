"""The `email.send` job type: render a registered template and send it through SES to the recipients who are
not on the suppression list.

    jobs.enqueue("email.send", {"to": ["ada@example.com"], "template": "welcome",
                                "variables": {"name": "Ada", "product": "Underlay"}, "reply_to": "help@example.com"})

One SES message goes to every recipient left (they share its To: line, as in any e-mail to several people;
enqueue one job per recipient for private messages). The result records `sent`, `skipped` (suppressed) and the
SES `message_id`. SES throttling and server errors are retried with the job type's backoff; a request SES
refuses outright (`MessageRejected`, an unverified from-address, a bad parameter) raises `EmailRejected`, whose
message says retrying will not help. Delivery is at least once: a worker that dies after SES accepted the
message but before the job is marked succeeded sends it again when the job is retried.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from underlay.email import templates
from underlay.email.addresses import EmailAddress, unique
from underlay.job_types import Backoff, JobContext, job_type

SES_MAX_RECIPIENTS = 50
# SES error codes worth retrying: throttling (the per-second rate; a daily quota resets too) and server faults.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
    }
)


class EmailRejected(Exception):
    """SES refused the request itself; sending it again cannot succeed."""


class SendEmailPayload(BaseModel):
    to: list[EmailAddress] = Field(min_length=1, max_length=SES_MAX_RECIPIENTS)
    template: str = Field(min_length=1, max_length=64)
    variables: dict[str, str | int | float] = Field(default_factory=dict)
    reply_to: EmailAddress | None = None

    @field_validator("to")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return unique(value)

    @field_validator("template")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            templates.get(value)
        except KeyError:
            raise ValueError(f"unknown template; one of {', '.join(templates.names())}") from None
        return value

    @field_validator("variables")
    @classmethod
    def _complete(
        cls, value: dict[str, str | int | float], info: ValidationInfo
    ) -> dict[str, str | int | float]:
        name = info.data.get("template")
        if name is None:  # the template itself failed validation; that error says enough
            return value
        missing = templates.get(name).missing(value)
        if missing:
            raise ValueError(f"missing variables for template {name!r}: {', '.join(missing)}")
        return value


@job_type(
    "email.send",
    SendEmailPayload,
    max_attempts=5,
    # 5 s, 15 s, 45 s, 135 s (jittered): rides out SES's per-second rate and short outages, then the DLQ.
    backoff=Backoff(base_s=5, factor=3, cap_s=600),
    timeout_s=30,
)
def send(payload: SendEmailPayload, ctx: JobContext) -> dict[str, Any]:
    """Send a templated e-mail through SES, skipping suppressed recipients."""
    from underlay.email import suppression

    rendered = templates.get(payload.template).render(payload.variables)
    blocked = suppression.suppressed(payload.to)
    recipients = [a for a in payload.to if a.lower() not in blocked]
    skipped = [a for a in payload.to if a.lower() in blocked]
    result: dict[str, Any] = {
        "template": payload.template,
        "sent": recipients,
        "skipped": skipped,
        "message_id": None,
    }
    if recipients:
        result["message_id"] = deliver(
            recipients, rendered, reply_to=payload.reply_to, template=payload.template
        )
    return result


def deliver(
    recipients: list[str], rendered: templates.Rendered, *, reply_to: str | None, template: str
) -> str:
    """One SES SendEmail call; returns the SES message id."""
    from email.utils import formataddr

    from botocore.exceptions import ClientError
    from underlay.aws import client
    from underlay.email.settings import email_settings
    from underlay.errors import ConfigInvalidError

    settings = email_settings()
    if not settings.from_address:
        raise ConfigInvalidError("E-mail needs a from-address: set UNDERLAY_EMAIL__FROM_ADDRESS.")
    source = (
        formataddr((settings.from_name, settings.from_address), charset="utf-8")
        if settings.from_name
        else settings.from_address
    )
    request: dict[str, Any] = {
        "Source": source,
        "Destination": {"ToAddresses": recipients},
        "Message": {
            "Subject": {"Data": rendered.subject, "Charset": "UTF-8"},
            "Body": {
                "Html": {"Data": rendered.html, "Charset": "UTF-8"},
                "Text": {"Data": rendered.text, "Charset": "UTF-8"},
            },
        },
        "Tags": [{"Name": "template", "Value": template}],
    }
    if reply_to:
        request["ReplyToAddresses"] = [reply_to]
    if settings.configuration_set:
        request["ConfigurationSetName"] = settings.configuration_set
    try:
        response = client("ses").send_email(**request)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in RETRYABLE_CODES or status >= 500:
            raise  # the worker retries after the backoff delay
        message = str(error.response.get("Error", {}).get("Message", ""))[:300]
        raise EmailRejected(f"SES refused the message ({code}: {message}); retrying will not help") from error
    return str(response["MessageId"])
