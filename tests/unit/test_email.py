"""E-mail without AWS: templates (escaping, missing variables), address checks, the payload model, and which
SES notifications suppress whom."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from underlay.email import templates
from underlay.email.addresses import check_address, unique
from underlay.email.jobs import SendEmailPayload
from underlay.email.suppression import addresses_to_suppress

WELCOME_VARS: dict[str, str | int | float] = {"name": "Ada", "product": "Underlay"}


def test_welcome_renders_html_and_text() -> None:
    rendered = templates.get("welcome").render(WELCOME_VARS)
    assert rendered.subject == "Welcome to Underlay, Ada"
    assert "<p>Hi Ada,</p>" in rendered.html and "<strong>Underlay</strong>" in rendered.html
    assert rendered.text.startswith("Hi Ada,\n\nWelcome to Underlay.")


def test_html_variables_are_escaped_and_text_is_not() -> None:
    rendered = templates.get("welcome").render({"name": '<script>alert("x")</script> & co', "product": "U"})
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in rendered.html
    assert '<script>alert("x")</script> & co' in rendered.text


def test_the_subject_loses_line_breaks() -> None:
    rendered = templates.get("welcome").render({"name": "Ada\r\nBcc: eve@example.com", "product": "U"})
    assert "\n" not in rendered.subject and "\r" not in rendered.subject


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(KeyError, match="product"):
        templates.get("welcome").render({"name": "Ada"})
    assert templates.get("welcome").variables == {"name", "product"}


def test_templates_are_checked_when_defined() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        templates.define("Welcome Mail", subject="s", html="h", text="t")
    with pytest.raises(ValueError, match="not a placeholder"):
        templates.define("price", subject="costs $5", html="h", text="t")
    with pytest.raises(ValueError, match="twice"):
        templates.define("welcome", subject="another", html="h", text="t")
    again = templates.define("test-dollars", subject="$$5 for $name", html="<p>$name</p>", text="${name}!")
    assert (
        templates.define("test-dollars", subject="$$5 for $name", html="<p>$name</p>", text="${name}!")
        == again
    )
    assert again.render({"name": "Ada"}).subject == "$5 for Ada"


@pytest.mark.parametrize(
    "address", ["ada@example.com", "a.b+tag@mail.example.co.uk", "o'neil@example.io", " pad@example.com "]
)
def test_plain_addresses_pass(address: str) -> None:
    assert check_address(address) == address.strip()


@pytest.mark.parametrize(
    "address",
    [
        "nope",
        "@example.com",
        "ada@",
        "ada@localhost",
        "ada@exa mple.com",
        "Ada <ada@example.com>",
        "ada@example.com\r\nBcc: eve@example.com",
        ".ada@example.com",
        "a..da@example.com",
        "ada@-example.com",
        "a" * 65 + "@example.com",
    ],
)
def test_other_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError):
        check_address(address)


def test_repeated_recipients_are_sent_once() -> None:
    assert unique(["Ada@example.com", "bob@example.com", "ada@EXAMPLE.com"]) == [
        "Ada@example.com",
        "bob@example.com",
    ]


def _fields(error: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in error.errors()]


def test_the_payload_names_each_bad_field() -> None:
    ok = SendEmailPayload.model_validate(
        {"to": ["ada@example.com", "ADA@example.com"], "template": "welcome", "variables": WELCOME_VARS}
    )
    assert ok.to == ["ada@example.com"] and ok.reply_to is None
    with pytest.raises(ValidationError) as bad_to:
        SendEmailPayload.model_validate(
            {"to": ["ok@example.com", "nope"], "template": "welcome", "variables": WELCOME_VARS}
        )
    assert _fields(bad_to.value) == ["to.1"]
    with pytest.raises(ValidationError) as unknown:
        SendEmailPayload.model_validate({"to": ["ada@example.com"], "template": "nope"})
    assert _fields(unknown.value) == ["template"] and "welcome" in unknown.value.errors()[0]["msg"]
    with pytest.raises(ValidationError) as missing:
        SendEmailPayload.model_validate(
            {"to": ["ada@example.com"], "template": "welcome", "variables": {"name": "A"}}
        )
    assert _fields(missing.value) == ["variables"] and "product" in missing.value.errors()[0]["msg"]
    with pytest.raises(ValidationError) as empty:
        SendEmailPayload.model_validate({"to": [], "template": "welcome", "variables": WELCOME_VARS})
    assert _fields(empty.value) == ["to"]
    with pytest.raises(ValidationError) as too_many:
        SendEmailPayload.model_validate(
            {"to": [f"u{i}@example.com" for i in range(51)], "template": "welcome", "variables": WELCOME_VARS}
        )
    assert _fields(too_many.value) == ["to"]
    with pytest.raises(ValidationError) as reply:
        SendEmailPayload.model_validate(
            {"to": ["ada@example.com"], "template": "welcome", "variables": WELCOME_VARS, "reply_to": "x"}
        )
    assert _fields(reply.value) == ["reply_to"]


def _bounce(kind: str, *addresses: str) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind,
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": a, "status": "5.1.1"} for a in addresses],
            "feedbackId": "fb-1",
        },
        "mail": {"messageId": "m-1", "source": "no-reply@example.com", "destination": list(addresses)},
    }


def test_permanent_bounces_and_complaints_suppress_their_recipients() -> None:
    assert addresses_to_suppress(_bounce("Permanent", "Gone@Example.com", "Bob <bob@example.com>")) == [
        ("gone@example.com", "bounce:Permanent/General", "fb-1"),
        ("bob@example.com", "bounce:Permanent/General", "fb-1"),
    ]
    complaint = {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "angry@example.com"}],
            "complaintFeedbackType": "abuse",
        },
    }
    assert addresses_to_suppress(complaint) == [("angry@example.com", "complaint:abuse", "")]
    # configuration-set event destinations say eventType instead of notificationType
    assert addresses_to_suppress({**complaint, "eventType": "Complaint", "notificationType": None})[0][0] == (
        "angry@example.com"
    )


def test_transient_bounces_deliveries_and_not_spam_do_not_suppress() -> None:
    assert addresses_to_suppress(_bounce("Transient", "full@example.com")) == []
    assert addresses_to_suppress(_bounce("Undetermined", "who@example.com")) == []
    assert (
        addresses_to_suppress({"notificationType": "Delivery", "delivery": {"recipients": ["a@example.com"]}})
        == []
    )
    not_spam = {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "a@example.com"}],
            "complaintFeedbackType": "not-spam",
        },
    }
    assert addresses_to_suppress(not_spam) == []
    assert addresses_to_suppress({}) == []
