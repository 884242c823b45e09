"""Jobs API: enqueue, list, inspect, cancel, retry, delete; schedules; dead letters; metrics. Logic: `underlay.jobs`.

No `from __future__ import annotations` here: Powertools reads the route signatures at runtime.
"""

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, Field
from underlay import jobs
from underlay.http import create_app
from underlay.jobs import query, schedules

app = create_app("jobs")
JobId = Annotated[str, Path(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$")]
Priority = Literal["high", "normal", "low"]


class EnqueueRequest(BaseModel):
    type: str = Field(min_length=1, max_length=128)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "normal"
    delay_seconds: int | None = Field(default=None, ge=0, le=365 * 86400)
    run_at: datetime | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)


class RedriveRequest(BaseModel):
    priority: Priority | None = None
    limit: int = Field(default=100, ge=1, le=1000)


def _accepted(body: dict[str, Any]):  # a 202 Response; no annotation, as Powertools reads it
    return Response(202, "application/json", json.dumps(body))


@app.handles("POST /v1/jobs")
def enqueue(request: Annotated[EnqueueRequest, Body()]):
    job_id = jobs.enqueue(
        request.type,
        request.payload,
        priority=request.priority,
        delay_seconds=request.delay_seconds,
        run_at=request.run_at,
        idempotency_key=request.idempotency_key,
    )
    return _accepted({"id": job_id, "status": jobs.get(job_id)["status"]})


@app.handles("GET /v1/jobs")
def list_jobs(
    *,
    status: Annotated[
        Literal["pending", "running", "succeeded", "failed", "cancelled"] | None, Query()
    ] = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    priority: Annotated[Priority | None, Query()] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    found, next_cursor = query.list_jobs(
        query.Filters(status, type, priority, start, end), limit=limit, cursor=cursor
    )
    return {"jobs": found, "next_cursor": next_cursor}


@app.handles("GET /v1/jobs/schedules")
def list_schedules() -> dict[str, Any]:
    return {"schedules": schedules.listing(datetime.now(UTC))}


@app.handles("POST /v1/jobs/schedules/{name}/trigger")
def trigger(name: Annotated[str, Path(max_length=64)]):
    job_id = schedules.trigger(name)
    return _accepted({"id": job_id, "status": "pending", "schedule": name})


@app.handles("GET /v1/jobs/dead-letters")
def dead_letters() -> dict[str, Any]:
    return {"queues": query.dead_letters()}


@app.handles("POST /v1/jobs/dead-letters/redrive")
def redrive(request: Annotated[RedriveRequest | None, Body()] = None) -> dict[str, Any]:
    wanted = request or RedriveRequest()
    return query.redrive(wanted.priority, wanted.limit)


@app.handles("GET /v1/jobs/metrics")
def metrics() -> dict[str, Any]:
    return query.metrics()


@app.handles("GET /v1/jobs/{id}")
def get_job(id: JobId) -> dict[str, Any]:
    return jobs.get(id)


@app.handles("POST /v1/jobs/{id}/cancel")
def cancel(id: JobId) -> dict[str, Any]:
    return jobs.cancel(id)


@app.handles("POST /v1/jobs/{id}/retry")
def retry(id: JobId):
    return _accepted(jobs.retry(id))


@app.handles("DELETE /v1/jobs/{id}")
def delete(id: JobId) -> dict[str, Any]:
    return jobs.delete(id)


handler = app.lambda_handler
