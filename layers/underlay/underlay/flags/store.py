"""Flags and segments in the flags table, the version stamp, and every write the API makes.

Items: a flag is `pk = FLAG#<key>`, `sk = FLAG` with the validated flag as JSON in `doc` and, beside it for the
list filters, `kind = flag`, `key`, `state` (enabled|disabled|archived), `stale` and `tags`; a segment is
`pk = SEGMENT#<key>`, `sk = SEGMENT` (`kind = segment`). `META`/`STAMP` holds the stamp, a counter bumped in the
same transaction as every write; Redis mirrors it (`<prefix>flags:stamp`) so that instances can check it every few
seconds without an AWS call. Updates carry `version` (optimistic locking: a stale one is 409).

The mirror only ever moves forward (a Lua set-if-greater: two writers racing cannot set it back) and expires after
`STAMP_TTL_SECONDS`; an instance that finds it missing reads the table's stamp and mirrors that, so a mirror missed
while Redis was down heals within the TTL.

`load_all` reads the stamp with a consistent read and then every flag and segment *also* with a consistent read:
the `by_kind` index (eventually consistent, and the only way to list them without a Scan) only names the items,
whose documents are then read from the base table with a consistent BatchGetItem. So an update, toggle or delete
committed before the stamp was read is always in what is loaded under it. What the index can still miss is an item
created just before the load (its index entry lags); `FlagClient` therefore reloads once more shortly after every
stamp change (see `underlay.flags.FlagClient.refresh`).
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from underlay.aws import error_code
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
STAMP_TTL_SECONDS = 60  # a mirror missed while Redis was down heals within this
BATCH_GET_SIZE = 100  # DynamoDB's BatchGetItem limit

# Set the stamp only if greater than the mirrored one (a missing or garbled one counts as 0), with the TTL.
_SET_IF_GREATER = """
local current = tonumber(redis.call('GET', KEYS[1])) or 0
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return 1
end
return 0
"""


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
    mirror_stamp()


def mirror_stamp(stamp: str | None = None) -> None:
    """Copy the table's stamp (or `stamp`, read from it) to Redis, where instances check it; never raises.

    Set only if greater, so concurrent writers cannot move it back; with a TTL, so a missed mirror (Redis or the
    table unreachable right after a write) heals when it expires. Meanwhile instances fall back to the table."""
    from underlay.redis_client import breaker, get_redis, key

    if stamp is None:
        try:
            stamp = read_stamp_from_table()
        except Exception:  # not a Redis failure: the breaker is not told; the TTL heals the mirror
            return
    if not breaker().allow():
        return
    try:
        get_redis().eval(_SET_IF_GREATER, 1, key("flags", "stamp"), stamp, STAMP_TTL_SECONDS)
        breaker().success()
    except Exception as error:
        breaker().failure(error)


def read_stamp_from_table() -> str:
    item = _ddb().get_item(TableName=table(), Key=STAMP_KEY, ConsistentRead=True).get("Item")
    return item["stamp"]["N"] if item else "0"


def _cancelled(error: Exception) -> bool:
    return error_code(error) == "TransactionCanceledException"


def _query_kind(kind: str, projection: str | None = None) -> list[dict[str, Any]]:
    """Every item of a kind from the `by_kind` index (eventually consistent: for lists and checks, not loads)."""
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {
        "TableName": table(),
        "IndexName": "by_kind",
        "KeyConditionExpression": "kind = :k",
        "ExpressionAttributeValues": {":k": {"S": kind}},
    }
    if projection:
        request["ProjectionExpression"] = projection
    while True:
        page = _ddb().query(**request)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _get_consistently(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items at `keys` (pk and doc), read with consistent BatchGetItems; a deleted one is left out."""
    name, items = table(), []
    for start in range(0, len(keys), BATCH_GET_SIZE):
        request: dict[str, Any] = {
            name: {
                "Keys": keys[start : start + BATCH_GET_SIZE],
                "ConsistentRead": True,
                "ProjectionExpression": "pk, doc",
            }
        }
        for attempt in range(8):  # about 4 s of backoff in all
            reply = _ddb().batch_get_item(RequestItems=request)
            items += reply.get("Responses", {}).get(name, [])
            request = reply.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: back off before asking for the rest
        else:
            raise RuntimeError("BatchGetItem kept leaving keys unprocessed")
    return items


def load_all() -> tuple[list[Flag], list[Segment], str]:
    """Every flag and segment, and the stamp they were read under (read first: a write in between shows next time).

    The index only lists the keys; the documents are read consistently from the table (see the module's doc)."""
    stamp = read_stamp_from_table()
    keys = [
        {"pk": i["pk"], "sk": i["sk"]} for kind in ("flag", "segment") for i in _query_kind(kind, "pk, sk")
    ]
    flags: list[Flag] = []
    segments: list[Segment] = []
    for item in sorted(_get_consistently(keys), key=lambda i: str(i["pk"]["S"])):
        if item["pk"]["S"].startswith("FLAG#"):
            flags.append(Flag.model_validate_json(item["doc"]["S"]))
        else:
            segments.append(Segment.model_validate_json(item["doc"]["S"]))
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
    mirror_stamp()
