"""Configuration API. Logic: `underlay.config.service`; the layers and hot reload: `underlay.config.runtime`.

No `from __future__ import annotations` here: Powertools reads the route signatures at runtime.
"""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from pydantic import BaseModel, Field
from underlay.config import runtime, service
from underlay.errors import BadRequestError
from underlay.http import create_app

app = create_app("config")
Key = Annotated[str, Path(min_length=1, max_length=128)]  # any other key is a 404 naming it


class SettingUpdate(BaseModel):
    value: Any = Field(description="The new value; validated against the schema with every other layer")
    version: int | None = Field(default=None, ge=0, description="The version you read; a stale one gets 409")


class Rollback(BaseModel):
    version: int = Field(
        ge=0, description="The version to restore (see the key's history); 0 drops the runtime value"
    )
    expected_version: int | None = Field(
        default=None, ge=0, description="The current version you read (or If-Match)"
    )


class Proposal(BaseModel):
    settings: dict[str, Any] = Field(description='Runtime values by key: {"cache.default_ttl_seconds": 60}')


def _actor() -> str:
    return app.identity.sub if app.identity else "unknown"


def _expected(version: int | None, if_match: str | None) -> int | None:
    """The version from the body, else from `If-Match` (`"3"`, `W/"3"` or `3`)."""
    if version is not None or not if_match:
        return version
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise BadRequestError('If-Match must be a setting version, such as "3".', code="INVALID_IF_MATCH")
    return int(tag)


def _with_etag(body: dict[str, Any]):  # a Response; no annotation, as Powertools reads it
    import json

    return Response(200, "application/json", json.dumps(body), headers={"ETag": f'"{body["version"]}"'})


@app.handles("GET /v1/configuration")
def list_settings() -> dict[str, Any]:
    return service.list_settings()


@app.handles("GET /v1/configuration/schema")
def schema() -> dict[str, Any]:
    return service.schema()


@app.handles("GET /v1/configuration/{key}")
def get_setting(key: Key):
    return _with_etag(service.get(key))


@app.handles("GET /v1/configuration/{key}/history")
def history(
    key: Key,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    return service.history(key, limit=limit, cursor=cursor)


@app.handles("PUT /v1/configuration/{key}")
def put_setting(
    key: Key,
    update: Annotated[SettingUpdate, Body()],
    if_match: Annotated[str | None, Header(alias="if-match", max_length=64)] = None,
):
    expected = _expected(update.version, if_match)
    return _with_etag(service.put(key, update.value, expected_version=expected, actor=_actor()))


@app.handles("POST /v1/configuration/validate")
def validate(proposal: Annotated[Proposal, Body()]) -> dict[str, Any]:
    return service.validate_document(proposal.settings)


@app.handles("POST /v1/configuration/reload")
def reload() -> dict[str, Any]:
    return service.reload(actor=_actor())


@app.handles("POST /v1/configuration/{key}/rollback")
def rollback(
    key: Key,
    request: Annotated[Rollback, Body()],
    if_match: Annotated[str | None, Header(alias="if-match", max_length=64)] = None,
):
    expected = _expected(request.expected_version, if_match)
    return _with_etag(service.rollback(key, request.version, expected_version=expected, actor=_actor()))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # The config API must stay usable when stored values broke the configuration: it is how they get fixed.
    with runtime.repair_mode():
        return app.lambda_handler(event, context)
