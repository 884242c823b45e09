"""Event sources of the local stack: what Lambda's SQS poller and EventBridge Scheduler do on AWS.

- `JobWorkers` polls the job queues in priority order (high, then normal, then low: under a backlog high jobs
  finish first), hands each batch to the real `worker` handler as an SQS event, and deletes the messages it did
  not report as failed (partial batch responses), as Lambda does. `Subscribers` does the same for the event-bus
  subscription queues, which moto's rules fill from the bus.
- `Scheduler` fires every declared schedule by its cron in its time zone (croniter), putting the same message on
  the normal queue that EventBridge Scheduler would; and it delivers one-time schedules (jobs more than 15 minutes
  ahead) created in moto when they are due.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from underlay import declaration

if TYPE_CHECKING:
    from infra.local.stack import LocalStack

PRIORITY_ORDER = ("jobs-high", "jobs-normal", "jobs-low")
IDLE_SECONDS = 0.2


def _client(stack: LocalStack, service: str) -> Any:
    return stack.aws._client(service)


def _url(stack: LocalStack, queue: str) -> str:
    return stack.aws.names[declaration.env_name("queue", queue)]


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Messages from ReceiveMessage as the Lambda SQS event they would be on AWS."""
    records = []
    for m in messages:
        attributes = {k: v for k, v in (m.get("Attributes") or {}).items()}
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": attributes,
                "messageAttributes": {
                    name: {"stringValue": a.get("StringValue"), "dataType": a.get("DataType", "String")}
                    for name, a in (m.get("MessageAttributes") or {}).items()
                },
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


class _Loop(ABC):
    """A daemon thread running `tick()` until stopped."""

    name = "loop"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stack: LocalStack | None = None

    def start(self, stack: LocalStack) -> None:
        self.stack = stack
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.tick()
            except Exception as error:  # keep the stack serving; say what went wrong
                print(f"{self.name}: {type(error).__name__}: {error}", flush=True)
                busy = False
            if not busy:
                self._stop.wait(IDLE_SECONDS)

    @abstractmethod
    def tick(self) -> bool:
        """One round of work; True when there was work (the loop goes again at once), False to idle."""


class QueueConsumer(_Loop):
    """Lambda's SQS poller for one function: the queues in order, one batch at a time, partial batch responses."""

    function = ""
    queues: tuple[str, ...] = ()

    def tick(self) -> bool:
        assert self.stack is not None
        sqs = _client(self.stack, "sqs")
        for queue in self.queues:
            url = _url(self.stack, queue)
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                continue
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            result = self.stack.runner.invoke(self.function, sqs_event(messages, arn))
            failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
            return True  # start again from the first queue (for jobs: the high-priority one)
        return False


class JobWorkers(QueueConsumer):
    name, function, queues = "job-workers", "worker", PRIORITY_ORDER


class Subscribers(QueueConsumer):
    """Event-bus subscriptions: moto's rules put matching events on the `sub-<name>` queues."""

    name, function = "subscribers", "subscriber"
    queues = declaration.function("subscriber").consumes


class Scheduler(_Loop):
    name = "scheduler"

    def __init__(self) -> None:
        super().__init__()
        self._next: dict[str, datetime] = {}

    def tick(self) -> bool:
        from underlay.jobs import schedules

        assert self.stack is not None
        now = datetime.now(UTC)
        sqs = _client(self.stack, "sqs")
        for schedule in declaration.SCHEDULES:
            due = self._next.get(schedule.name)
            if due is None:
                self._next[schedule.name] = schedules.next_runs(schedule, now)[0]
                continue
            if now >= due:
                fired = {**schedules.message(schedule), "scheduled_time": due.astimezone(UTC).isoformat()}
                sqs.send_message(QueueUrl=_url(self.stack, "jobs-normal"), MessageBody=json.dumps(fired))
                self._next[schedule.name] = schedules.next_runs(schedule, now)[0]
        self._one_time(now)
        return False

    def _one_time(self, now: datetime) -> None:
        """Deliver due `at(...)` schedules (jobs more than 15 minutes ahead) and delete them."""
        assert self.stack is not None
        scheduler = _client(self.stack, "scheduler")
        for summary in scheduler.list_schedules(NamePrefix="job-").get("Schedules", []):
            found = scheduler.get_schedule(
                Name=summary["Name"], GroupName=summary.get("GroupName", "default")
            )
            expression = found.get("ScheduleExpression", "")
            if not expression.startswith("at("):
                continue
            when = datetime.fromisoformat(expression[3:-1]).replace(tzinfo=UTC)
            if now < when:
                continue
            target = found["Target"]
            name = target["Arn"].rsplit(":", 1)[-1]
            _client(self.stack, "sqs").send_message(
                QueueUrl=_queue_url_by_name(self.stack, name), MessageBody=target["Input"]
            )
            scheduler.delete_schedule(Name=summary["Name"], GroupName=summary.get("GroupName", "default"))


def _queue_url_by_name(stack: LocalStack, physical: str) -> str:
    for url in stack.aws.names.values():
        if isinstance(url, str) and url.rstrip("/").endswith("/" + physical):
            return url
    raise LookupError(physical)


def default_sources() -> list[Any]:
    return [JobWorkers(), Subscribers(), Scheduler()]
