"""Export audit entries matching filters to the audit bucket as CSV or JSONL, with a presigned download URL.

Until the jobs worker exists, `POST /v1/audit-logs/export` runs this inline, for up to `audit.export_inline_limit`
entries; the `audit.export` job type runs the same function in the background.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from underlay.audit.query import Filters, list_entries
from underlay.errors import FieldError, ValidationFailedError

Format = Literal["csv", "jsonl"]


class ExportRequest(BaseModel):
    """What to export: the list filters (dates ISO 8601; without a time zone, UTC) and the format. The API's body
    and the job's payload."""

    format: Format = "jsonl"
    user: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    action: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def filters(self) -> Filters:
        return Filters(self.user, self.entity_type, self.entity_id, self.action, self.start, self.end)


COLUMNS = (
    "id",
    "ts",
    "seq",
    "actor",
    "tenant",
    "action",
    "entity_type",
    "entity_id",
    "result",
    "source_ip",
    "user_agent",
    "correlation_id",
    "before",
    "after",
    "prev_hash",
    "hash",
)


def render(entries: list[dict[str, Any]], fmt: Format) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in entries).encode()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for entry in entries:
        row = dict(entry)
        for name in ("before", "after"):
            row[name] = "" if row.get(name) is None else json.dumps(row[name], sort_keys=True)
        writer.writerow(row)
    return out.getvalue().encode()


def export(export_id: str, filters: Filters, fmt: Format, *, limit: int) -> dict[str, Any]:
    """Write every entry matching `filters` (newest first) to `exports/<id>.<fmt>`; refuse more than `limit`."""
    from underlay.audit.digest import _bucket
    from underlay.aws import client
    from underlay.settings import get_settings

    filters = filters.check()  # refuse bad filters before any work; dates without a time zone are UTC
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = list_entries(filters, limit=min(1000, limit + 1), cursor=cursor)
        entries.extend(page)
        if len(entries) > limit:
            raise ValidationFailedError(
                f"More than {limit} entries match; narrow the date range.",
                errors=[FieldError("from", f"at most {limit} entries per export")],
            )
        if cursor is None:
            break
    key = f"exports/{export_id}.{fmt}"
    bucket = _bucket()
    s3 = client("s3")
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=render(entries, fmt),
        ContentType="text/csv" if fmt == "csv" else "application/x-ndjson",
        ChecksumAlgorithm="SHA256",
    )
    expires = get_settings().audit.presign_seconds
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)
    return {"count": len(entries), "key": key, "url": url, "expires_in": expires}
