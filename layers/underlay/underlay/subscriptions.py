"""Event-bus subscriptions, declared once: an EventBridge pattern, then an SQS queue, then a handler.

    Subscription(
        "audit-on-job-failure",
        pattern={"source": ["underlay.jobs"], "detail-type": ["BackgroundJobFailed"]},
        handler="underlay.subscriptions:audit_job_failure",
        max_receive_count=5,
    )

Each subscription gets an EventBridge rule on the bus with its pattern, targeting the queue `sub-<name>` (with
the DLQ `sub-<name>-dlq` after `max_receive_count` receives); the `subscriber` function consumes every such
queue. `dispatch` finds the subscription by the queue a record came from and calls its handler with the whole
EventBridge event (`{"id", "detail-type", "source", "time", "detail", ...}`). A handler that raises fails only
its own record (a partial batch response), so SQS redelivers it after the visibility timeout, and after
`max_receive_count` receives it lands in the DLQ. Delivery is at least once (EventBridge and SQS may each
deliver twice): handlers must tolerate a repeat; the event `id` identifies one.

Handlers run with the event's `correlation_id` and `traceparent` (from its detail) as the current context, so
their logs, audit entries and events join the trace that published it.

On AWS the rule does the matching; `matches(pattern, event)` is EventBridge's matching for the local stack and
tests: exact values, nested `detail` fields, arrays in the event, `prefix`, `suffix`, `equals-ignore-case`,
`anything-but` (a value, a list, or a prefix/suffix), `exists`, `numeric` and `$or`. An operator it does not know
raises ValueError rather than guessing. `dispatch` does not filter again: a pattern AWS matches and this matcher
might read differently must never drop an event in production.

This module is light on purpose (no boto3, no pydantic at import), as the declaration imports `SUBSCRIPTIONS`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

# At most 48 characters: `staging-underlay-sub-<name>-dlq` stays within the 80 an SQS queue name may have.
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,46}[a-z0-9]$")
_HANDLER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

Handler = Callable[[dict[str, Any]], Any]


class Subscription(NamedTuple):
    """An event pattern, the queue `sub-<name>` it fills, and the handler (`"module:function"`) that drains it."""

    name: str
    pattern: Mapping[str, Any]  # an EventBridge event pattern, as JSON
    handler: str
    max_receive_count: int = 5  # receives before a failing event goes to the DLQ
    description: str = ""

    @property
    def queue_name(self) -> str:
        return f"sub-{self.name}"

    @property
    def dlq_name(self) -> str:
        return f"{self.queue_name}-dlq"

    def resolve(self) -> Handler:
        """The handler function (imported on first use)."""
        found = _resolved.get(self.handler)
        if found is None:
            module, _, attribute = self.handler.partition(":")
            found = getattr(importlib.import_module(module), attribute)
            if not callable(found):
                raise TypeError(f"subscription {self.name!r}: {self.handler} is not callable")
            _resolved[self.handler] = found
        return found


_resolved: dict[str, Handler] = {}

SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription(
        "audit-on-job-failure",
        pattern={"source": ["underlay.jobs"], "detail-type": ["BackgroundJobFailed"]},
        handler="underlay.subscriptions:audit_job_failure",
        max_receive_count=5,
        description="Records every job that failed for good (its last attempt, now in a DLQ) in the audit log",
    ),
)


def check(subscriptions: Sequence[Subscription] = SUBSCRIPTIONS) -> None:
    """Raise ValueError for a bad name, a repeated name, a malformed handler or a pattern `matches` rejects."""
    seen: set[str] = set()
    for sub in subscriptions:
        if not _NAME.match(sub.name):
            raise ValueError(
                f"subscription name {sub.name!r} must be lowercase letters, digits and '-' (at most 48)"
            )
        if sub.name in seen:
            raise ValueError(f"subscription {sub.name!r} is declared twice")
        seen.add(sub.name)
        if not _HANDLER.match(sub.handler):
            raise ValueError(f"subscription {sub.name!r}: handler must be 'module:function'")
        if sub.max_receive_count < 1:
            raise ValueError(f"subscription {sub.name!r}: max_receive_count must be at least 1")
        if not sub.pattern:
            raise ValueError(f"subscription {sub.name!r}: an empty pattern would match every event")
        matches(sub.pattern, {})  # validates every operator, whatever the event


def find(queue: str, subscriptions: Sequence[Subscription] = SUBSCRIPTIONS) -> Subscription:
    """The subscription whose queue this is, from a queue ARN, URL or physical name. Physical names carry a
    stage prefix (`dev-underlay-sub-<name>`, `t-sub-<name>`), so the longest `sub-<name>` suffix wins."""
    physical = re.split(r"[:/]", queue.rstrip("/"))[-1]
    best: Subscription | None = None
    for sub in subscriptions:
        ours = physical == sub.queue_name or physical.endswith("-" + sub.queue_name)
        if ours and (best is None or len(sub.name) > len(best.name)):
            best = sub
    if best is None:
        raise LookupError(f"no subscription reads the queue {physical!r}")
    return best


# --- dispatch -----------------------------------------------------------------------------------


def dispatch(
    event: dict[str, Any], context: Any, *, subscriptions: Sequence[Subscription] | None = None
) -> dict[str, Any]:
    """The Lambda entry point for subscription queues: `{"batchItemFailures": [...]}`."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from underlay import events
    from underlay.config import runtime

    declared = SUBSCRIPTIONS if subscriptions is None else tuple(subscriptions)
    # Every record failing is still a partial response: each one retries on its own and reaches its DLQ.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with events.batch():
        runtime.batch_boundary("subscriber")  # pick up changed settings and the log level (issue 5)
        return process_partial_response(  # type: ignore[return-value]
            event=event,
            record_handler=lambda record: deliver(record, declared),
            processor=processor,
            context=context,
        )


def deliver(record: SQSRecord, subscriptions: Sequence[Subscription]) -> Any:
    """Run one record's subscription handler in the event's context. Raises to leave the record for SQS."""
    import json

    from underlay import context
    from underlay.observability import get_logger

    try:
        sub = find(record.event_source_arn, subscriptions)
        body = json.loads(record.body)
        if not isinstance(body, dict) or "detail-type" not in body:
            raise ValueError(f"subscription {sub.name!r}: the message is not an EventBridge event")
    except (LookupError, ValueError) as error:  # retrying cannot fix it: it goes to the DLQ, said once here
        get_logger().warning(
            "subscription record unreadable",
            extra={"message_id": record.message_id, "error": f"{type(error).__name__}: {str(error)[:300]}"},
        )
        raise
    detail: dict[str, Any] = body["detail"] if isinstance(body.get("detail"), dict) else {}
    bound = context.RequestContext(
        correlation_id=str(detail.get("correlation_id") or body.get("id") or record.message_id),
        traceparent=str(detail.get("traceparent") or context.new_traceparent()),
        sub=f"system:subscription:{sub.name}",
        route=sub.name,
    )
    with context.bound(bound):
        try:
            return sub.resolve()(body)
        except Exception as error:
            from underlay.admin.recorder import record_failure

            receives = int(record.attributes.approximate_receive_count or 1)
            final = receives >= sub.max_receive_count
            get_logger().warning(
                "subscription handler failed",
                extra={
                    "subscription": sub.name,
                    "event_id": body.get("id"),
                    "detail_type": body.get("detail-type"),
                    "receive": receives,
                    "to_dlq_next": final,
                    "error": f"{type(error).__name__}: {str(error)[:300]}",
                },
            )
            # Every failed delivery is an occurrence of its error group; Sentry hears of the last one before the
            # DLQ (as of a job's final attempt), not of each retry.
            record_failure(f"subscription:{sub.name}", error, report=final, subscription=sub.name)
            raise


# --- built-in handlers --------------------------------------------------------------------------


def audit_job_failure(event: dict[str, Any]) -> dict[str, Any]:
    """`audit-on-job-failure`: a job that failed its last attempt is written to the audit log. The worker only
    logs attempts and publishes the event; this puts the final failure where operators review sensitive things
    (a failed `audit.digest` or `audit.export` matters). Recording never raises (see `underlay.audit.record`)."""
    from underlay import audit

    detail = event.get("detail") or {}
    return audit.record(
        "jobs.failed",
        "job",
        str(detail.get("id") or "unknown"),
        after={
            "type": detail.get("type"),
            "attempts": detail.get("attempts"),
            "error": detail.get("error"),
            "event_id": event.get("id"),  # a repeated delivery shows as a second entry with the same event id
        },
        actor="system:jobs",
        result="failure",
    )


# --- matching -----------------------------------------------------------------------------------

_MISSING = object()


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether an EventBridge event pattern matches an event (ValueError for a pattern EventBridge would refuse
    or that this matcher does not implement)."""
    if not isinstance(pattern, Mapping):
        raise ValueError("a pattern is a JSON object")
    result = True
    for field, expected in pattern.items():
        if field == "$or":
            if not isinstance(expected, list) or len(expected) < 2:
                raise ValueError("$or takes a list of at least two patterns")
            found = [matches(alternative, event) for alternative in expected]  # validate every branch
            result = result and any(found)
            continue
        value = event.get(field, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(expected, Mapping):
            result = _match_object(expected, value) and result
        elif isinstance(expected, list):
            result = _match_leaf(field, expected, value) and result
        else:
            raise ValueError(f"pattern field {field!r}: a match must be a list of values or an object")
    return result


def _match_object(pattern: Mapping[str, Any], value: Any) -> bool:
    if isinstance(value, list):  # an array of objects matches if one of them does
        candidates = [v for v in value if isinstance(v, Mapping)]
        return any([matches(pattern, c) for c in candidates]) if candidates else _validated(pattern)
    if isinstance(value, Mapping):
        return matches(pattern, value)
    return _validated(pattern)


def _validated(pattern: Mapping[str, Any]) -> bool:
    """No object to descend into; `exists: false` below can still match a missing field."""
    return matches(pattern, {})


def _match_leaf(field: str, expected: list[Any], value: Any) -> bool:
    if not expected:
        raise ValueError(f"pattern field {field!r}: an empty list matches nothing")
    values: list[Any] = value if isinstance(value, list) else [value]
    found = False
    for rule in expected:
        if isinstance(rule, Mapping):
            found = _match_operator(field, rule, value, values) or found
        elif isinstance(rule, list):
            raise ValueError(f"pattern field {field!r}: nested lists are not allowed")
        else:
            found = found or any(_same(rule, v) for v in values if v is not _MISSING)
    return found


def _same(expected: Any, value: Any) -> bool:
    if expected is None or value is None:
        return expected is None and value is None
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and expected == value
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return float(expected) == float(value)
    return type(expected) is type(value) and expected == value


def _match_operator(field: str, rule: Mapping[str, Any], value: Any, values: list[Any]) -> bool:
    if len(rule) != 1:
        raise ValueError(f"pattern field {field!r}: one operator per object")
    ((operator, argument),) = rule.items()
    present = [v for v in values if v is not _MISSING]
    if operator == "exists":
        if not isinstance(argument, bool):
            raise ValueError(f"pattern field {field!r}: exists takes true or false")
        return (value is not _MISSING) is argument
    if operator in ("prefix", "suffix", "equals-ignore-case"):
        if isinstance(argument, Mapping) and operator == "prefix" and set(argument) == {"equals-ignore-case"}:
            argument, operator = argument["equals-ignore-case"], "prefix-ignore-case"
        if not isinstance(argument, str):
            raise ValueError(f"pattern field {field!r}: {operator} takes a string")
        return any(_string_match(operator, argument, v) for v in present)
    if operator == "anything-but":
        _excluded(field, argument, _MISSING)  # validates the argument even when the field is missing
        # as with every match on an array, one element that is not excluded is enough
        return any(not _excluded(field, argument, v) for v in present)
    if operator == "numeric":
        check = _numeric(field, argument)
        return any(isinstance(v, int | float) and not isinstance(v, bool) and check(v) for v in present)
    raise ValueError(f"pattern field {field!r}: the operator {operator!r} is not supported locally")


def _string_match(operator: str, argument: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if operator == "prefix":
        return value.startswith(argument)
    if operator == "prefix-ignore-case":
        return value.lower().startswith(argument.lower())
    if operator == "suffix":
        return value.endswith(argument)
    return value.lower() == argument.lower()


def _excluded(field: str, argument: Any, value: Any) -> bool:
    """Whether `anything-but: argument` excludes this value."""
    if isinstance(argument, Mapping):
        if len(argument) != 1 or next(iter(argument)) not in ("prefix", "suffix", "equals-ignore-case"):
            raise ValueError(f"pattern field {field!r}: anything-but takes a value, a list, prefix or suffix")
        ((operator, inner),) = argument.items()
        inners = inner if isinstance(inner, list) else [inner]
        return any(_string_match(operator, str(i), value) for i in inners)
    if isinstance(argument, list):
        return any(_same(a, value) for a in argument)
    return _same(argument, value)


def _numeric(field: str, argument: Any) -> Callable[[float], bool]:
    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise ValueError(f"pattern field {field!r}: numeric takes [op, n] or [op, n, op, n]")
    comparisons = {
        "=": lambda a, b: a == b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    pairs = list(zip(argument[::2], argument[1::2], strict=True))
    for op, bound in pairs:
        if op not in comparisons or isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ValueError(f"pattern field {field!r}: numeric takes comparisons like ['>', 0, '<=', 5]")
    return lambda v: all(comparisons[op](v, bound) for op, bound in pairs)


def routes(
    event: Mapping[str, Any], subscriptions: Iterable[Subscription] = SUBSCRIPTIONS
) -> list[Subscription]:
    """The subscriptions an event goes to (the local stack's stand-in for the rules)."""
    return [sub for sub in subscriptions if matches(sub.pattern, event)]
