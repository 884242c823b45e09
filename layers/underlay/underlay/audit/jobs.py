"""Audit job types: `audit.digest` (the hourly signed digest) and `audit.export` (exports in the background).
The jobs worker (issue 7) runs them; until then the API exports inline and the digest job is run by its schedule
once the worker exists (or directly: `underlay.audit.jobs.digest(DigestPayload(), ctx)`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from underlay.audit.export import ExportRequest
from underlay.job_types import JobContext, job_type


class DigestPayload(BaseModel):
    pass


class ExportPayload(ExportRequest):
    export_id: str = Field(pattern=r"^[0-9A-Z]{26}$")
    limit: int = Field(default=1_000_000, ge=1)


@job_type("audit.digest", DigestPayload, max_attempts=3, timeout_s=60)
def digest(payload: DigestPayload, ctx: JobContext) -> dict[str, Any]:
    """Sign the audit chain head with KMS and store the digest under S3 Object Lock."""
    from underlay.audit import digest as digests
    from underlay.audit import writer as get_writer
    from underlay.errors import ConfigInvalidError

    writer = get_writer()
    if writer is None:
        raise ConfigInvalidError("The audit table is not configured for this function.")
    made = digests.create(writer)
    return {"written": made is not None, "seq": made["seq"] if made else None}


@job_type("audit.export", ExportPayload, max_attempts=2, timeout_s=280)
def export(payload: ExportPayload, ctx: JobContext) -> dict[str, Any]:
    """Export audit entries matching the filters to S3 (CSV or JSONL)."""
    from underlay.audit import export as exports
    from underlay.audit.query import Filters

    filters = Filters(
        payload.user, payload.entity_type, payload.entity_id, payload.action, payload.start, payload.end
    )
    return exports.export(payload.export_id, filters, payload.format, limit=payload.limit)
