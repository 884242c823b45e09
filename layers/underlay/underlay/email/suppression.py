"""The suppression list: addresses that bounced permanently or complained, never sent to again.

An item per address in the jobs table: `pk = SUPPRESS#<lowercased address>`, `sk = SUPPRESS`, with `address`,
`reason` (`bounce:Permanent/General`, `complaint:abuse`), `at`, `feedback_id`, and `expires_at` when
`email.suppression_days` is set. The items carry none of the jobs GSIs' keys (status, type, kind), so they never
show up in job listings.

SES publishes bounce and complaint notifications to SNS (identity notifications carry `notificationType`,
configuration-set event destinations `eventType`); `record_sns_event` reads them:
- a `Bounce` whose `bounceType` is `Permanent` suppresses its bounced recipients; `Transient` and `Undetermined`
  bounces do not (the mailbox may be full today and fine tomorrow);
- a `Complaint` suppresses its complained recipients, unless its feedback type is `not-spam` (a recipient
  taking the message *out* of their spam folder);
- anything else (deliveries, sends, opens) is ignored.
Writing the same suppression twice is harmless, so SNS redelivering a notification is too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

SK = "SUPPRESS"
_BATCH_GET_MAX = 100


def key(address: str) -> dict[str, Any]:
    return {"pk": {"S": f"SUPPRESS#{address.strip().lower()}"}, "sk": {"S": SK}}


def _table() -> str:
    from underlay.jobs.store import table

    return table()


def suppress(address: str, reason: str, *, feedback_id: str = "", at: datetime | None = None) -> None:
    """Add (or refresh) an address on the list."""
    from underlay.aws import client
    from underlay.email.settings import email_settings
    from underlay.items import to_item

    moment = at or datetime.now(UTC)
    days = email_settings().suppression_days
    item = key(address) | to_item(
        {
            "address": address.strip().lower(),
            "reason": reason[:128],
            "at": moment.isoformat(timespec="seconds"),
            "feedback_id": feedback_id[:256] or None,
            "expires_at": int((moment + timedelta(days=days)).timestamp()) if days else None,
        }
    )
    client("dynamodb").put_item(TableName=_table(), Item=item)


def unsuppress(address: str) -> bool:
    """Take an address off the list (an operator's decision); False if it was not on it."""
    from underlay.aws import client

    response = client("dynamodb").delete_item(TableName=_table(), Key=key(address), ReturnValues="ALL_OLD")
    return bool(response.get("Attributes"))


def get(address: str) -> dict[str, Any] | None:
    """The suppression record of an address, or None."""
    from underlay.aws import client
    from underlay.items import from_item

    item = client("dynamodb").get_item(TableName=_table(), Key=key(address), ConsistentRead=True).get("Item")
    if not item:
        return None
    return {k: v for k, v in from_item(item).items() if k not in ("pk", "sk")}


def suppressed(addresses: Iterable[str]) -> set[str]:
    """Which of the addresses are on the list (lowercased); one BatchGetItem per 100 addresses."""
    from underlay.aws import client

    wanted = sorted({a.strip().lower() for a in addresses})
    found: set[str] = set()
    table = _table()
    ddb = client("dynamodb")
    for start in range(0, len(wanted), _BATCH_GET_MAX):
        request: dict[str, Any] = {
            table: {
                "Keys": [key(a) for a in wanted[start : start + _BATCH_GET_MAX]],
                "ProjectionExpression": "pk",
                "ConsistentRead": True,
            }
        }
        for _ in range(5):  # unprocessed keys (throttling) are asked again; botocore backs off between calls
            response = ddb.batch_get_item(RequestItems=request)
            found.update(i["pk"]["S"].removeprefix("SUPPRESS#") for i in response["Responses"].get(table, []))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise RuntimeError("the suppression list could not be read (unprocessed keys)")
    return found


def addresses_to_suppress(notification: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """`(address, reason, feedback_id)` for each recipient an SES notification says to suppress."""
    kind = notification.get("notificationType") or notification.get("eventType")
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        if bounce.get("bounceType") != "Permanent":
            return []
        reason = f"bounce:Permanent/{bounce.get('bounceSubType') or 'General'}"
        recipients, feedback = bounce.get("bouncedRecipients") or [], bounce.get("feedbackId") or ""
    elif kind == "Complaint":
        complaint = notification.get("complaint") or {}
        feedback_type = complaint.get("complaintFeedbackType") or "unspecified"
        if feedback_type == "not-spam":
            return []
        reason = f"complaint:{feedback_type}"
        recipients, feedback = complaint.get("complainedRecipients") or [], complaint.get("feedbackId") or ""
    else:
        return []
    out = []
    for recipient in recipients:
        address = parseaddr(str((recipient or {}).get("emailAddress") or ""))[1]
        if "@" in address:
            out.append((address.lower(), reason, str(feedback)))
    return out


def record_notification(notification: Mapping[str, Any]) -> list[str]:
    """Suppress what one SES notification says to; returns the addresses suppressed."""
    done = []
    for address, reason, feedback_id in addresses_to_suppress(notification):
        suppress(address, reason, feedback_id=feedback_id)
        done.append(address)
    return done


def record_sns_event(event: Mapping[str, Any]) -> dict[str, int]:
    """The SNS → Lambda event of SES notifications. A message that is not JSON is logged and skipped (retrying
    cannot fix it); a DynamoDB failure raises, so Lambda retries the event."""
    from underlay.observability import get_logger

    suppressed_count = ignored = 0
    for record in event.get("Records") or []:
        raw = (record.get("Sns") or {}).get("Message") or ""
        try:
            notification = json.loads(raw)
        except ValueError:
            notification = None
        if not isinstance(notification, dict):
            get_logger().warning(
                "SNS message is not an SES notification",
                extra={"message_id": (record.get("Sns") or {}).get("MessageId")},
            )
            ignored += 1
            continue
        done = record_notification(notification)
        if done:
            suppressed_count += len(done)
        else:
            ignored += 1
    # counts only: addresses are personal data and stay out of the logs
    get_logger().info("SES notifications read", extra={"suppressed": suppressed_count, "ignored": ignored})
    return {"suppressed": suppressed_count, "ignored": ignored}
