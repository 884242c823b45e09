"""Reading the audit log: every filter is a DynamoDB Query on a GSI (never a Scan), newest first, signed cursor.

The most selective filter picks the index (entity, then actor, then action, then entity type, else time); the
others narrow it with a FilterExpression. Ids are ULIDs, so a date range is `id BETWEEN` on the index sort key.
Dates without a time zone are UTC (`?from=2024-01-01&to=2024-01-02T00:00:00Z` mixes both); ULIDs start in 1970,
so an earlier date is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from underlay.audit.chain import CHAIN
from underlay.errors import FieldError, NotFoundError, ValidationFailedError
from underlay.ids import id_range
from underlay.items import equals_filter, from_item


class Filters(NamedTuple):
    user: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    action: str | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # inclusive

    def scope(self) -> str:
        """What a cursor is bound to: this exact list."""
        from underlay.pagination import scope_of

        return scope_of("audit", self)

    def check(self) -> Filters:
        """Validate; return the filters with their dates in UTC (a date without a time zone is UTC)."""
        if self.entity_id and not self.entity_type:
            raise ValidationFailedError(
                "entity_id needs entity_type.", errors=[FieldError("entity_type", "required with entity_id")]
            )
        start, end = _utc(self.start, "from"), _utc(self.end, "to")
        if start and end and start > end:
            raise ValidationFailedError(
                "from is after to.", errors=[FieldError("from", "must not be after 'to'")]
            )
        return self._replace(start=start, end=end)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(moment: datetime | None, field: str) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment < _EPOCH:  # compared before converting: year 1 with an offset has no UTC datetime
        raise ValidationFailedError(
            f"{field} is before 1970.", errors=[FieldError(field, "must not be before 1970-01-01")]
        )
    return moment.astimezone(UTC)


def _table() -> str:
    from underlay.errors import ConfigInvalidError
    from underlay.settings import get_settings

    table = get_settings().resource("table", "audit")
    if not table:
        raise ConfigInvalidError("The audit table is not configured for this function.")
    return table


def _plan(filters: Filters) -> tuple[str, str, str, dict[str, str]]:
    """(index, partition attribute, partition value, the filter attributes left for the FilterExpression)."""
    rest = {"actor": filters.user, "action": filters.action, "entity_type": filters.entity_type}
    if filters.entity_type and filters.entity_id:
        rest.pop("entity_type")
        index, attribute, value = "by_entity", "entity", f"{filters.entity_type}#{filters.entity_id}"
    elif filters.user:
        index, attribute, value = "by_actor", "actor", filters.user
    elif filters.action:
        index, attribute, value = "by_action", "action", filters.action
    elif filters.entity_type:
        index, attribute, value = "by_entity_type", "entity_type", filters.entity_type
    else:
        index, attribute, value = "by_time", "chain", CHAIN
    rest.pop(attribute, None)
    return index, attribute, value, {k: v for k, v in rest.items() if v}


def list_entries(
    filters: Filters, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of entries matching `filters`, newest first, and the cursor of the next page."""
    from underlay import pagination
    from underlay.aws import client

    filters = filters.check()
    scope = filters.scope()
    start_key = pagination.decode(cursor, scope) if cursor else None
    index, attribute, value, rest = _plan(filters)
    names = {"#p": attribute}
    values: dict[str, Any] = {":p": {"S": value}}
    condition = "#p = :p"
    if filters.start or filters.end:
        low, high = id_range(filters.start, filters.end)
        names["#id"] = "id"
        values[":lo"], values[":hi"] = {"S": low}, {"S": high}
        condition += " AND #id BETWEEN :lo AND :hi"
    request: dict[str, Any] = {
        "TableName": _table(),
        "IndexName": index,
        "KeyConditionExpression": condition,
        "ScanIndexForward": False,
        "Limit": limit,
    }
    narrowing = equals_filter(rest, names, values)
    if narrowing:
        request["FilterExpression"] = narrowing
    request["ExpressionAttributeNames"], request["ExpressionAttributeValues"] = names, values
    if start_key:
        request["ExclusiveStartKey"] = start_key
    page = client("dynamodb").query(**request)
    from underlay.audit import entry_view

    entries = [entry_view(from_item(item)) for item in page.get("Items", [])]
    return entries, pagination.encode(page.get("LastEvaluatedKey"), scope)


def get_entry(entry_id: str) -> dict[str, Any]:
    from underlay.aws import client

    page = client("dynamodb").query(
        TableName=_table(),
        IndexName="by_id",
        KeyConditionExpression="#id = :id",
        ExpressionAttributeNames={"#id": "id"},
        ExpressionAttributeValues={":id": {"S": entry_id}},
        Limit=1,
    )
    items = page.get("Items", [])
    if not items:
        raise NotFoundError(f"No audit entry {entry_id}.")
    from underlay.audit import entry_view

    return entry_view(from_item(items[0]))
