"""Flags and segments in the flags table, the version stamp, and every write the API makes.

Items: a flag is `pk = FLAG#<key>`, `sk = FLAG` with the validated flag as JSON in `doc` and, beside it for the
list filters, `kind = flag`, `key`, `state` (enabled|disabled|archived), `stale` and `tags`; a segment is
`pk = SEGMENT#<key>`, `sk = SEGMENT` (`kind = segment`). `META`/`STAMP` holds the stamp, a counter bumped in the
same transaction as every write; Redis mirrors it (`<prefix>flags:stamp`) so that instances can check it every few
seconds without an AWS call. Updates carry `version` (optimistic locking: a stale one is 409).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from underlay.errors import (
    ConfigInvalidError,
    ConflictError,
    FieldError,
    NotFoundError,
    ValidationFailedError,
)
from underlay.flags.model import Flag, FlagSpec, Segment

State = Literal["enabled", "disabled", "archived"]
STAMP_KEY = {"pk": {"S": "META"}, "sk": {"S": "STAMP"}}


def table() -> str:
    from underlay.settings import get_settings

    name = get_settings().resource("table", "flags")
    if not name:
        raise ConfigInvalidError("The flags table is not configured for this function.")
    return name


def _ddb() -> Any:
    from underlay.aws import client

    return client("dynamodb")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def state_of(flag: Flag) -> State:
    return "archived" if flag.archived else "enabled" if flag.enabled else "disabled"


def flag_item(flag: Flag) -> dict[str, Any]:
    return {
        "pk": {"S": f"FLAG#{flag.key}"},
        "sk": {"S": "FLAG"},
        "kind": {"S": "flag"},
        "key": {"S": flag.key},
        "doc": {"S": flag.model_dump_json()},
        "version": {"N": str(flag.version)},
        "state": {"S": state_of(flag)},
        "stale": {"BOOL": flag.potentially_stale},
        "tags": {"L": [{"S": t} for t in flag.tags]},
    }


def segment_item(segment: Segment, version: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"SEGMENT#{segment.key}"},
        "sk": {"S": "SEGMENT"},
        "kind": {"S": "segment"},
        "key": {"S": segment.key},
        "doc": {"S": segment.model_dump_json()},
        "version": {"N": str(version)},
    }


def _stamp_update() -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table(),
            "Key": STAMP_KEY,
            "UpdateExpression": "ADD stamp :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def _write(put: dict[str, Any], condition: str, values: dict[str, Any] | None = None) -> None:
    """One transaction: the item (if `condition` holds) and the stamp. ConditionalCheckFailed → None raised up."""
    request: dict[str, Any] = {"TableName": table(), "Item": put, "ConditionExpression": condition}
    if values:
        request["ExpressionAttributeValues"] = values
    _ddb().transact_write_items(TransactItems=[{"Put": request}, _stamp_update()])
    _mirror_stamp()


def _mirror_stamp() -> None:
    """Copy the table's stamp to Redis, where instances check it. Redis down: they check the table instead."""
    from underlay.redis_client import breaker, get_redis, key

    try:
        stamp = read_stamp_from_table()
        if breaker().allow():
            get_redis().set(key("flags", "stamp"), stamp)
            breaker().success()
    except Exception as error:  # instances fall back to the table's stamp
        breaker().failure(error)


def read_stamp_from_table() -> str:
    item = _ddb().get_item(TableName=table(), Key=STAMP_KEY, ConsistentRead=True).get("Item")
    return item["stamp"]["N"] if item else "0"


def _cancelled(error: Exception) -> bool:
    from botocore.exceptions import ClientError

    return (
        isinstance(error, ClientError)
        and error.response.get("Error", {}).get("Code") == "TransactionCanceledException"
    )


def _query_kind(kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {
        "TableName": table(),
        "IndexName": "by_kind",
        "KeyConditionExpression": "kind = :k",
        "ExpressionAttributeValues": {":k": {"S": kind}},
    }
    while True:
        page = _ddb().query(**request)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def load_all() -> tuple[list[Flag], list[Segment], str]:
    """Every flag and segment, and the stamp they were read under (read first: a write in between shows next time)."""
    stamp = read_stamp_from_table()
    flags = [Flag.model_validate_json(i["doc"]["S"]) for i in _query_kind("flag")]
    segments = [Segment.model_validate_json(i["doc"]["S"]) for i in _query_kind("segment")]
    return flags, segments, stamp


def get(key: str) -> Flag:
    item = (
        _ddb()
        .get_item(
            TableName=table(), Key={"pk": {"S": f"FLAG#{key}"}, "sk": {"S": "FLAG"}}, ConsistentRead=True
        )
        .get("Item")
    )
    if not item:
        raise NotFoundError(f"No flag {key!r}.")
    return Flag.model_validate_json(item["doc"]["S"])


def _check_references(spec: FlagSpec) -> None:
    """Prerequisites exist and form no cycle; rule segments exist."""
    from underlay.flags.engine import find_cycle

    flags = {f.key: f for f in [Flag.model_validate_json(i["doc"]["S"]) for i in _query_kind("flag")]}
    for i, pre in enumerate(spec.prerequisites):
        if pre.key not in flags:
            raise ValidationFailedError(
                "Unknown prerequisite.", errors=[FieldError(f"prerequisites.{i}.key", f"no flag {pre.key!r}")]
            )
        if pre.variant not in flags[pre.key].variants:
            raise ValidationFailedError(
                "Unknown prerequisite variant.",
                errors=[
                    FieldError(f"prerequisites.{i}.variant", f"{pre.key!r} has no variant {pre.variant!r}")
                ],
            )
    graph = {k: [p.key for p in f.prerequisites] for k, f in flags.items()}
    graph[spec.key] = [p.key for p in spec.prerequisites]
    cycle = find_cycle(graph)
    if cycle:
        raise ValidationFailedError(
            "Prerequisites form a cycle.", errors=[FieldError("prerequisites", " -> ".join(cycle))]
        )
    segments = {i["key"]["S"] for i in _query_kind("segment")}
    for i, rule in enumerate(spec.rules):
        if rule.segment and rule.segment not in segments:
            raise ValidationFailedError(
                "Unknown segment.", errors=[FieldError(f"rules.{i}.segment", f"no segment {rule.segment!r}")]
            )


def create(spec: FlagSpec, actor: str) -> Flag:
    _check_references(spec)
    now = _now()
    flag = Flag(
        **spec.model_dump(),
        salt=secrets.token_hex(8),
        version=1,
        created_at=now,
        created_by=actor,
        updated_at=now,
        updated_by=actor,
    )
    try:
        _write(flag_item(flag), "attribute_not_exists(pk)")
    except Exception as error:
        if _cancelled(error):
            raise ConflictError(f"A flag {spec.key!r} exists already.") from error
        raise
    return flag


def replace(
    current: Flag, changes: dict[str, Any], expected_version: int, actor: str, *, validate_refs: bool = False
) -> Flag:
    """Write `current` with `changes` if the stored version is still `expected_version` (else 409)."""
    data = {
        **current.model_dump(),
        **changes,
        "version": expected_version + 1,
        "updated_at": _now(),
        "updated_by": actor,
    }
    updated = Flag.model_validate(data)
    if validate_refs:
        _check_references(updated)
    try:
        _write(flag_item(updated), "version = :v", {":v": {"N": str(expected_version)}})
    except Exception as error:
        if _cancelled(error):
            latest = get(current.key)
            raise ConflictError(
                f"The flag changed meanwhile (version {latest.version}); reload and try again."
            ) from error
        raise
    return updated


class Page(NamedTuple):
    flags: list[Flag]
    next_cursor: str | None


def list_flags(
    *, tag: str | None, state: State | None, stale: bool | None, limit: int, cursor: str | None
) -> Page:
    """One page of flags by key, filtered (a Query on `by_kind`, never a Scan)."""
    from underlay import pagination

    scope = f"flags:tag={tag or ''}|state={state or ''}|stale={stale}"
    names: dict[str, str] = {}
    values: dict[str, Any] = {":k": {"S": "flag"}}
    filters = []
    if tag:
        names["#t"], values[":t"] = "tags", {"S": tag}
        filters.append("contains(#t, :t)")
    if state:
        names["#s"], values[":s"] = "state", {"S": state}
        filters.append("#s = :s")
    if stale is not None:
        names["#st"], values[":st"] = "stale", {"BOOL": stale}
        filters.append("#st = :st")
    request: dict[str, Any] = {
        "TableName": table(),
        "IndexName": "by_kind",
        "KeyConditionExpression": "kind = :k",
        "ExpressionAttributeValues": values,
        "Limit": limit,
    }
    if names:
        request["ExpressionAttributeNames"] = names
        request["FilterExpression"] = " AND ".join(filters)
    if cursor:
        request["ExclusiveStartKey"] = pagination.decode(cursor, scope)
    page = _ddb().query(**request)
    flags = [Flag.model_validate_json(i["doc"]["S"]) for i in page.get("Items", [])]
    return Page(flags, pagination.encode(page.get("LastEvaluatedKey"), scope))


def mark_stale(flag: Flag, reasons: list[str]) -> None:
    """The stale scan's verdict; not a change of the flag, so its version stays."""
    item = flag_item(flag.model_copy(update={"potentially_stale": bool(reasons), "stale_reasons": reasons}))
    _ddb().put_item(
        TableName=table(),
        Item=item,
        ConditionExpression="version = :v",
        ExpressionAttributeValues={":v": {"N": str(flag.version)}},
    )


# --- segments -----------------------------------------------------------------------------------


def get_segment(key: str) -> tuple[Segment, int]:
    item = (
        _ddb()
        .get_item(
            TableName=table(),
            Key={"pk": {"S": f"SEGMENT#{key}"}, "sk": {"S": "SEGMENT"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    if not item:
        raise NotFoundError(f"No segment {key!r}.")
    return Segment.model_validate_json(item["doc"]["S"]), int(item["version"]["N"])


def list_segments() -> list[dict[str, Any]]:
    return [{**json.loads(i["doc"]["S"]), "version": int(i["version"]["N"])} for i in _query_kind("segment")]


def put_segment(segment: Segment, expected_version: int | None) -> int:
    """Create (expected_version None: 409 if it exists) or replace at a version (409 if stale)."""
    version = 1 if expected_version is None else expected_version + 1
    condition = "attribute_not_exists(pk)" if expected_version is None else "version = :v"
    values = None if expected_version is None else {":v": {"N": str(expected_version)}}
    try:
        _write(segment_item(segment, version), condition, values)
    except Exception as error:
        if _cancelled(error):
            raise ConflictError(
                "The segment exists already."
                if expected_version is None
                else "The segment changed meanwhile; reload and try again."
            ) from error
        raise
    return version


def delete_segment(key: str) -> None:
    users = [
        f.key
        for f in (Flag.model_validate_json(i["doc"]["S"]) for i in _query_kind("flag"))
        if any(r.segment == key for r in f.rules)
    ]
    if users:
        raise ConflictError(f"Flags use this segment: {', '.join(sorted(users))}.")
    get_segment(key)
    _ddb().transact_write_items(
        TransactItems=[
            {
                "Delete": {
                    "TableName": table(),
                    "Key": {"pk": {"S": f"SEGMENT#{key}"}, "sk": {"S": "SEGMENT"}},
                }
            },
            _stamp_update(),
        ]
    )
    _mirror_stamp()
