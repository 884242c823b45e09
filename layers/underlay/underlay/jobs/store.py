"""Job records in the jobs table, and the one place their status changes.

An item per job: `pk = JOB#<id>`, `sk = JOB`. Ids are ULIDs, so the GSIs (`by_status`, `by_type`, `by_time`, all
sorted by id) list newest first and a date range is `id BETWEEN`. Every status change is a conditional
UpdateItem that appends to `history` in the same write, so a record's history cannot disagree with its status,
and two workers can never both move a job to `running` (the exactly-once effect rests on that condition).
Records expire by TTL (`jobs.history_days`).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Literal

from underlay.aws import error_code
from underlay.errors import ConfigInvalidError, NotFoundError
from underlay.items import attr, from_item, to_item

Status = Literal["pending", "running", "succeeded", "failed", "cancelled"]
Priority = Literal["high", "normal", "low"]
STATUSES: tuple[Status, ...] = ("pending", "running", "succeeded", "failed", "cancelled")
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def table() -> str:
    from underlay.settings import get_settings

    name = get_settings().resource("table", "jobs")
    if not name:
        raise ConfigInvalidError("The jobs table is not configured for this function.")
    return name


def key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}


def _ddb() -> Any:
    from underlay.aws import client

    return client("dynamodb")


def view(item: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it: JSON fields parsed, storage keys dropped."""
    fields = from_item({k: v for k, v in item.items() if k != "history"})
    for name in ("payload", "result"):
        if isinstance(fields.get(name), str):
            fields[name] = json.loads(fields[name])
    fields["history"] = [json.loads(h["S"]) for h in item.get("history", {}).get("L", [])]
    fields["cancel_requested"] = bool(fields.get("cancel_requested"))
    for name in ("pk", "sk", "kind", "expires_at"):
        fields.pop(name, None)
    return fields


def new_record(
    job_id: str,
    job_type: str,
    payload: dict[str, Any],
    *,
    priority: Priority,
    max_attempts: int,
    run_at: str | None,
    idempotency_key: str | None,
    schedule: str | None,
    source: str,
    history_days: int,
) -> dict[str, Any]:
    created = now_iso()
    fields: dict[str, Any] = {
        "id": job_id,
        "kind": "job",
        "type": job_type,
        "status": "pending",
        "priority": priority,
        "payload": json.dumps(payload, sort_keys=True, separators=(",", ":")),
        "attempts": 0,
        "max_attempts": max_attempts,
        "created_at": created,
        "updated_at": created,
        "run_at": run_at,
        "idempotency_key": idempotency_key,
        "schedule": schedule,
        "source": source,
        "progress": 0,
        # History is kept `history_days` after the job is due, so a job far in the future is still there to run.
        "expires_at": int(max(time.time(), datetime.fromisoformat(run_at).timestamp() if run_at else 0))
        + history_days * 86400,
    }
    item = {**key(job_id), **to_item(fields)}
    item["history"] = {"L": [{"S": json.dumps({"status": "pending", "at": created, "attempt": 0})}]}
    return item


def get(job_id: str, *, consistent: bool = True) -> dict[str, Any]:
    item = _ddb().get_item(TableName=table(), Key=key(job_id), ConsistentRead=consistent).get("Item")
    if not item:
        raise NotFoundError(f"No job {job_id}.")
    return item


def transition(
    job_id: str,
    to: Status,
    *,
    expect: tuple[Status, ...],
    attempt: int | None = None,
    extra_condition: str | None = None,
    condition_values: dict[str, Any] | None = None,
    sets: dict[str, Any] | None = None,
    removes: tuple[str, ...] = (),
    note: dict[str, Any] | None = None,
    owner_attempt: int | None = None,
) -> dict[str, Any] | None:
    """Move a job to `to` if its status is one of `expect` (and `extra_condition` holds, and, with
    `owner_attempt`, it is still that attempt's run), appending to history.

    Returns the new item, or None when the condition failed (the job is elsewhere in its life).
    """
    from botocore.exceptions import ClientError

    at = now_iso()
    entry = {"status": to, "at": at, **({"attempt": attempt} if attempt is not None else {}), **(note or {})}
    values: dict[str, Any] = {
        ":to": {"S": to},
        ":at": {"S": at},
        ":h": {"L": [{"S": json.dumps(entry, sort_keys=True, default=str)}]},
        **{f":e{i}": {"S": status} for i, status in enumerate(expect)},
        **(condition_values or {}),
    }
    names = {"#s": "status"}
    assignments = ["#s = :to", "updated_at = :at", "history = list_append(history, :h)"]
    cleared = [*removes]
    for n, (name, value) in enumerate((sets or {}).items()):
        if value is None:
            cleared.append(name)
            continue
        names[f"#v{n}"] = name
        values[f":v{n}"] = attr(value)
        assignments.append(f"#v{n} = :v{n}")
    update = "SET " + ", ".join(assignments)
    if cleared:
        for n, name in enumerate(cleared):
            names[f"#r{n}"] = name
        update += " REMOVE " + ", ".join(f"#r{n}" for n in range(len(cleared)))
    condition = f"#s IN ({', '.join(f':e{i}' for i in range(len(expect)))})"
    if owner_attempt is not None:
        # Only the run that started as this attempt may finish it: a worker whose lease ran out and was taken
        # over must not overwrite the new run's outcome.
        values[":own"] = {"N": str(owner_attempt)}
        condition += " AND attempts = :own"
    if extra_condition:
        condition = f"({condition}) AND ({extra_condition})"
    try:
        return dict(
            _ddb().update_item(
                TableName=table(),
                Key=key(job_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )["Attributes"]
        )
    except ClientError as error:
        if error_code(error) == "ConditionalCheckFailedException":
            return None
        raise


def set_fields(job_id: str, **fields: Any) -> None:
    """Unconditional field updates that are not status changes (progress, cancel request)."""
    names, values, parts = {}, {}, []
    for n, (name, value) in enumerate(fields.items()):
        names[f"#f{n}"] = name
        values[f":f{n}"] = attr(value)
        parts.append(f"#f{n} = :f{n}")
    _ddb().update_item(
        TableName=table(),
        Key=key(job_id),
        UpdateExpression="SET " + ", ".join(parts),
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def start(job_id: str, *, lease_seconds: int) -> dict[str, Any] | None:
    """`pending → running` (or take over a `running` job whose lease ran out), counting the attempt.

    None when the job is anywhere else in its life (finished, cancelled, running under a live lease, or with a
    cancel request waiting): the caller must not run it.
    """
    from botocore.exceptions import ClientError

    now, at = int(time.time()), now_iso()
    try:
        return dict(
            _ddb().update_item(
                TableName=table(),
                Key=key(job_id),
                UpdateExpression=(
                    "SET #s = :running, attempts = attempts + :one, started_at = :at, updated_at = :at,"
                    " lease_until = :lease, history = list_append(history, :h)"
                ),
                ConditionExpression=(
                    "(attribute_not_exists(cancel_requested) OR cancel_requested = :no)"
                    " AND (#s = :pending OR (#s = :running AND lease_until < :now))"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":running": {"S": "running"},
                    ":pending": {"S": "pending"},
                    ":one": {"N": "1"},
                    ":at": {"S": at},
                    ":now": {"N": str(now)},
                    ":lease": {"N": str(now + lease_seconds)},
                    ":no": {"BOOL": False},
                    ":h": {"L": [{"S": json.dumps({"status": "running", "at": at})}]},
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
        )
    except ClientError as error:
        if error_code(error) == "ConditionalCheckFailedException":
            return None
        raise
