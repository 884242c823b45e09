"""Health API, plus the OpenAPI document and Swagger UI for the whole API. Logic: `underlay.health`.

No `from __future__ import annotations` here: Powertools reads the route signatures at runtime.
"""

import json
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from underlay import health
from underlay.http import create_app
from underlay.settings import get_settings

app = create_app("health")


def _health(report: health.HealthReport, *, detailed: bool = True) -> Response:
    body = report.document(get_settings(), detailed=detailed)
    return Response(report.http_status, health.HEALTH_CONTENT_TYPE, json.dumps(body))


@app.handles("GET /v1/health", responses=health.OPENAPI_RESPONSES)
def overall():
    return _health(health.run_checks(), detailed=False)


@app.handles("GET /v1/health/live", responses=health.OPENAPI_RESPONSES)
def live():
    return _health(health.HealthReport("pass", [], health.now()), detailed=False)


@app.handles("GET /v1/health/ready", responses=health.OPENAPI_RESPONSES)
def ready():
    return _health(health.run_checks(only_critical=True), detailed=False)


@app.handles("GET /v1/health/details", responses=health.OPENAPI_RESPONSES)
def details():
    return _health(health.run_checks())


@app.handles("GET /v1/health/database", responses=health.OPENAPI_RESPONSES)
def database():
    return _health(health.run_checks(["database"]))


@app.handles("GET /v1/health/cache", responses=health.OPENAPI_RESPONSES)
def cache():
    return _health(health.run_checks(["cache"]))


@app.handles("GET /v1/health/services", responses=health.OPENAPI_RESPONSES)
def services():
    return _health(health.run_checks(["services"]))


@app.handles("GET /v1/health/jobs", responses=health.OPENAPI_RESPONSES)
def jobs():
    return _health(health.run_checks(["jobs"]))


@app.handles("GET /v1/health/history")
def history(
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    snapshots, next_cursor = health.history(limit, cursor)
    return {"snapshots": snapshots, "next_cursor": next_cursor}


@app.handles("GET /v1/openapi.json")
def openapi():
    from underlay.openapi import document_json

    return Response(200, "application/json", document_json())


@app.handles("GET /v1/docs")
def docs():
    from underlay.openapi import swagger_html

    return Response(200, "text/html; charset=utf-8", swagger_html())


handler = app.lambda_handler
