"""Runtime settings in the config table (DynamoDB): current values, the version stamp, and history.

Items:
- `pk="setting", sk=<key>`: the current runtime value of one key (`value` as JSON text, `version`, who, when).
- `pk="setting", sk="#stamp"`: the configuration version. Every change and every reload request moves it.
  It sorts before every key, so one consistent Query of `pk="setting"` reads the stamp and all values: a cold
  load is one call. A warm instance reads only the stamp (one GetItem), at most every `config.refresh_seconds`.
- `pk="history#<key>", sk=<version, zero-padded>`: every value a key has had, with the previous one.

A change is one TransactWriteItems: the value (conditional on the version the writer read), its history entry
and the stamp, so a stale writer gets a conflict and readers never see a value without its history.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from underlay.aws import client, error_code
from underlay.errors import ConflictError, NotFoundError

SETTING_PK = "setting"
STAMP_SK = "#stamp"
_VERSION_DIGITS = 10

Action = Literal["update", "rollback"]


class _Removed:
    """`write(value=REMOVED)`: the key goes back to its stage/default value. The item stays as a tombstone so its
    version keeps counting up (history entries are keyed by version)."""

    def __repr__(self) -> str:
        return "REMOVED"


REMOVED: Any = _Removed()


class Snapshot(NamedTuple):
    """The runtime layer as stored: values and versions by key, and the stamp they were read at."""

    stamp: int
    values: dict[str, Any]
    versions: dict[str, int]
    updated: dict[str, dict[str, str]]  # key -> {"at", "by"}
    corrupt: tuple[str, ...] = ()  # keys whose stored item cannot be read (edited by hand, say)


EMPTY = Snapshot(0, {}, {}, {})  # no config table: defaults, stage and env only
UNKNOWN = Snapshot(-1, {}, {}, {})  # the table could not be read; -1 never matches a stamp, so it is retried


def _history_pk(key: str) -> str:
    return f"history#{key}"


def _version_sk(version: int) -> str:
    return f"{version:0{_VERSION_DIGITS}d}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def load(table: str) -> Snapshot:
    """Every runtime value and the stamp: one strongly consistent Query (more only past 1 MB)."""
    ddb = client("dynamodb")
    values: dict[str, Any] = {}
    versions: dict[str, int] = {}
    updated: dict[str, dict[str, str]] = {}
    corrupt: list[str] = []
    stamp = 0
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": SETTING_PK}},
        "ConsistentRead": True,
    }
    while True:
        page = ddb.query(**request)
        for item in page.get("Items", []):
            sk = item["sk"]["S"]
            if sk == STAMP_SK:
                stamp = int(item["stamp"]["N"])
                continue
            try:
                versions[sk] = int(item["version"]["N"])
                if not item.get("removed", {}).get("BOOL"):
                    values[sk] = json.loads(item["value"]["S"])
            except (KeyError, TypeError, ValueError):
                corrupt.append(sk)
                continue
            updated[sk] = {
                "at": item.get("updated_at", {}).get("S", ""),
                "by": item.get("updated_by", {}).get("S", ""),
            }
        if "LastEvaluatedKey" not in page:
            return Snapshot(stamp, values, versions, updated, tuple(corrupt))
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def read_stamp(table: str) -> int:
    """The configuration version: one GetItem."""
    item = (
        client("dynamodb")
        .get_item(
            TableName=table,
            Key={"pk": {"S": SETTING_PK}, "sk": {"S": STAMP_SK}},
            ProjectionExpression="stamp",
            ConsistentRead=True,
        )
        .get("Item")
    )
    return int(item["stamp"]["N"]) if item else 0


def bump_stamp(table: str, *, actor: str) -> int:
    """Move the stamp forward without changing a value (`POST /v1/configuration/reload`)."""
    result = client("dynamodb").update_item(**_stamp_update(table, actor), ReturnValues="UPDATED_NEW")
    return int(result["Attributes"]["stamp"]["N"])


def _stamp_update(table: str, actor: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "Key": {"pk": {"S": SETTING_PK}, "sk": {"S": STAMP_SK}},
        "UpdateExpression": "ADD stamp :one SET updated_at = :at, updated_by = :by",
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":at": {"S": _now()}, ":by": {"S": actor}},
    }


def write(
    table: str,
    key: str,
    value: Any,
    *,
    current_version: int,
    previous: Any,
    actor: str,
    action: Action = "update",
    from_version: int | None = None,
) -> int:
    """Store a new value of `key` (or `REMOVED`) if its version is still `current_version`; returns the new version.

    Raises `ConflictError` when another writer got there first.
    """
    version = current_version + 1
    at = _now()
    removed = value is REMOVED
    encoded = "null" if removed else json.dumps(value, separators=(",", ":"), sort_keys=True)
    setting: dict[str, Any] = {
        "pk": {"S": SETTING_PK},
        "sk": {"S": key},
        "value": {"S": encoded},
        "version": {"N": str(version)},
        "updated_at": {"S": at},
        "updated_by": {"S": actor},
    }
    history: dict[str, Any] = {
        "pk": {"S": _history_pk(key)},
        "sk": {"S": _version_sk(version)},
        "version": {"N": str(version)},
        "value": {"S": encoded},
        "previous": {"S": json.dumps(previous, separators=(",", ":"), sort_keys=True)},
        "action": {"S": action},
        "actor": {"S": actor},
        "at": {"S": at},
    }
    if from_version is not None:
        history["from_version"] = {"N": str(from_version)}
    if removed:
        setting["removed"] = history["removed"] = {"BOOL": True}
    if current_version:
        condition: dict[str, Any] = {
            "ConditionExpression": "version = :v",
            "ExpressionAttributeValues": {":v": {"N": str(current_version)}},
        }
    else:
        condition = {"ConditionExpression": "attribute_not_exists(pk)"}
    try:
        client("dynamodb").transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": setting, **condition}},
                {
                    "Put": {
                        "TableName": table,
                        "Item": history,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {"Update": _stamp_update(table, actor)},
            ]
        )
    except Exception as error:
        if error_code(error) == "TransactionCanceledException":
            raise ConflictError(
                f"{key} changed since version {current_version}; read it again and retry.",
                code="VERSION_CONFLICT",
            ) from None
        raise
    return version


class HistoryPage(NamedTuple):
    entries: list[dict[str, Any]]
    last_version: int | None  # the page's last version, when there may be more


def history(table: str, key: str, *, limit: int, before: int | None = None) -> HistoryPage:
    """A key's versions, newest first: one Query."""
    condition = "pk = :pk"
    values: dict[str, Any] = {":pk": {"S": _history_pk(key)}}
    if before is not None:
        condition += " AND sk < :before"
        values[":before"] = {"S": _version_sk(before)}
    page = client("dynamodb").query(
        TableName=table,
        KeyConditionExpression=condition,
        ExpressionAttributeValues=values,
        ScanIndexForward=False,
        Limit=limit,
    )
    entries = [_history_view(item) for item in page.get("Items", [])]
    more = "LastEvaluatedKey" in page and entries
    return HistoryPage(entries, entries[-1]["version"] if more else None)


def history_entry(table: str, key: str, version: int) -> dict[str, Any]:
    item = (
        client("dynamodb")
        .get_item(
            TableName=table,
            Key={"pk": {"S": _history_pk(key)}, "sk": {"S": _version_sk(version)}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    if item is None:
        raise NotFoundError(f"{key} has no version {version}.", code="VERSION_NOT_FOUND")
    return _history_view(item)


def _history_view(item: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "version": int(item["version"]["N"]),
        "value": json.loads(item["value"]["S"]),
        "previous": json.loads(item["previous"]["S"]),
        "action": item["action"]["S"],
        "actor": item["actor"]["S"],
        "at": item["at"]["S"],
    }
    if "from_version" in item:
        view["from_version"] = int(item["from_version"]["N"])
    if item.get("removed", {}).get("BOOL"):
        view["removed"] = (
            True  # the runtime value was dropped: the key went back to its stage or default value
        )
    return view
