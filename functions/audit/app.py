"""Audit API: query, export and verify the audit log. Logic: `underlay.audit`. Reading the log is audited too.

No `from __future__ import annotations` here: Powertools reads the route signatures at runtime.
"""

import json
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from underlay import audit
from underlay.audit import verify as chain_verify
from underlay.audit.export import ExportRequest
from underlay.audit.query import Filters, get_entry, list_entries
from underlay.http import create_app

app = create_app("audit")
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=2048)]
Text = Annotated[str | None, Query(min_length=1, max_length=256)]
When = Annotated[datetime | None, Query(alias="from")]
Until = Annotated[datetime | None, Query(alias="to")]


def _page(filters: Filters, limit: int, cursor: str | None) -> dict[str, Any]:
    entries, next_cursor = list_entries(filters, limit=limit, cursor=cursor)
    audit.record("audit.read", "audit_log", filters.scope(), after={"returned": len(entries)})
    return {"entries": entries, "next_cursor": next_cursor}


@app.handles("GET /v1/audit-logs")
def list_logs(
    *,
    user: Text = None,
    entity_type: Text = None,
    entity_id: Text = None,
    action: Text = None,
    start: When = None,
    end: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    return _page(Filters(user, entity_type, entity_id, action, start, end), limit, cursor)


@app.handles("GET /v1/audit-logs/users/{userId}")
def user_logs(
    userId: Annotated[str, Path(min_length=1, max_length=256)], limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    return _page(Filters(user=userId), limit, cursor)


@app.handles("GET /v1/audit-logs/verify")
def verify(
    start: Annotated[int | None, Query(alias="from", ge=1)] = None,
    end: Annotated[int | None, Query(alias="to", ge=1)] = None,
) -> dict[str, Any]:
    result = chain_verify.verify(start, end)
    audit.record(
        "audit.verify", "audit_log", "main", after={"ok": result["ok"], "checked": result["checked"]}
    )
    return result


@app.handles("GET /v1/audit-logs/{id}")
def one(id: Annotated[str, Path(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$")]) -> dict[str, Any]:
    entry = get_entry(id)
    audit.record("audit.read", "audit_entry", id)
    return entry


@app.handles("POST /v1/audit-logs/export")
def export(
    request: Annotated[ExportRequest, Body()],
):  # a 202 Response; no annotation, as Powertools reads it
    from underlay.audit import export as exports
    from underlay.ids import ulid
    from underlay.settings import get_settings

    export_id = ulid()
    filters = request.filters()
    filters.check()
    done = exports.export(export_id, filters, request.format, limit=get_settings().audit.export_inline_limit)
    audit.record(
        "audit.export", "audit_export", export_id, after={"count": done["count"], "format": request.format}
    )
    body = {"id": export_id, "status": "succeeded", "format": request.format, **done}
    return Response(202, "application/json", body=json.dumps(body))


handler = app.lambda_handler
