"""The OpenAPI 3 document for the whole API, and Swagger UI with its assets served inline (no CDN).

Each function's Powertools resolver knows its own routes and models; this module merges them, adds the bearer
security scheme and the problem+json responses every route can give, and caches the result per instance.
Only the `/v1/openapi.json` and `/v1/docs` routes import it.
"""

from __future__ import annotations

import importlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from underlay import declaration
from underlay.settings import get_settings

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail", "instance", "code", "correlation_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
        "correlation_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_PROBLEMS = {
    "400": "Malformed body",
    "401": "Missing or invalid token",
    "403": "Scope missing",
    "413": "Body too large",
    "415": "Body is not JSON",
    "422": "Validation failed",
    "429": "Rate limited",
    "503": "A dependency is down",
}


def _problem_ref(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def build_document() -> dict[str, Any]:
    settings = get_settings()
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Underlay API",
            "version": settings.version,
            "description": "Shared backend services: health, cache, flags, configuration, audit and jobs.",
        },
        "servers": [{"url": "/"}],
        "paths": {},
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
    for fn in declaration.FUNCTIONS:
        if not declaration.routes_for(fn.name):
            continue
        app = importlib.import_module(f"functions.{fn.name}.app").app
        schema = json.loads(
            app.get_openapi_json_schema(
                title="Underlay API",
                version=settings.version,
                security_schemes={"bearerAuth": HTTPBearer(bearerFormat="JWT")},
            )
        )
        for path, operations in schema.get("paths", {}).items():
            doc["paths"].setdefault(path, {}).update(operations)
        for name, component in schema.get("components", {}).get("schemas", {}).items():
            doc["components"]["schemas"].setdefault(name, component)
    for route in declaration.ROUTES:
        operation = doc["paths"].get(route.path, {}).get(route.method.lower())
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        wanted = ["400", "413", "415", "422", "503"] if route.public else list(_PROBLEMS)
        for status in wanted:
            responses.setdefault(status, _problem_ref(_PROBLEMS[status]))
        responses["422"] = _problem_ref(_PROBLEMS["422"])  # ours is problem+json, not Powertools' default
        if route.public:
            operation["security"] = []
    doc["components"]["schemas"].pop("HTTPValidationError", None)
    doc["components"]["schemas"].pop("ValidationError", None)
    return doc


@lru_cache(maxsize=1)
def document_json() -> str:
    return json.dumps(build_document(), separators=(",", ":"))


@lru_cache(maxsize=1)
def swagger_html() -> str:
    from aws_lambda_powertools.event_handler.openapi.swagger_ui import generate_swagger_html

    assets = Path(importlib.import_module("aws_lambda_powertools.event_handler").__file__ or "").parent
    js = (assets / "openapi" / "swagger_ui" / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    css = (assets / "openapi" / "swagger_ui" / "swagger-ui.min.css").read_text(encoding="utf-8")
    spec = document_json().replace("</", "<\\/")
    return generate_swagger_html(spec, js, css, "", None)
