"""Admin API: platform statistics, error groups, Prometheus metrics (`underlay.admin`), rate-limit resets
(`underlay.ratelimit`).

No `from __future__ import annotations` here: Powertools reads the route signatures at runtime.
"""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from underlay import ratelimit
from underlay.admin.metrics import CONTENT_TYPE
from underlay.http import create_app

app = create_app("admin")


@app.handles("GET /v1/admin/stats")
def stats() -> dict[str, Any]:
    """Every stats section; one that fails answers `{"error": ...}` and the others still come."""
    from underlay.admin import stats as sections

    invocation = app.lambda_context  # None outside Lambda (tests, the local stack)
    remaining = invocation.get_remaining_time_in_millis() / 1000 if invocation is not None else None
    return sections.collect(remaining_seconds=remaining)


@app.handles("GET /v1/admin/errors")
def errors(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    from underlay.admin import errors as groups

    found, next_cursor, trend = groups.list_groups(limit, cursor)
    return {"groups": found, "next_cursor": next_cursor, "trend": trend}


@app.handles(
    "GET /v1/metrics",
    responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE: {}}}},
)
def metrics():
    from underlay.admin.metrics import render

    return Response(200, CONTENT_TYPE, render())


@app.handles("DELETE /v1/admin/rate-limits/{subject}")
def reset_rate_limits(
    subject: Annotated[str, Path(min_length=1, max_length=3 * ratelimit.SUBJECT_MAX_LENGTH)],
) -> dict[str, Any]:
    """Forget a caller (token `sub`, or `ip:<address>`) in every route group; answers what was deleted."""
    return ratelimit.reset_subject(subject).as_dict()


handler = app.lambda_handler
