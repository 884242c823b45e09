"""Feature flags API: manage flags and segments, evaluate every flag for a caller, analytics.
Logic: `underlay.flags` (evaluation), `underlay.flags.service` (changes, audited), `underlay.flags.store`.

No `from __future__ import annotations` here: Powertools reads the route signatures at runtime.
"""

import json
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, Field
from underlay import flags
from underlay.flags import service, store
from underlay.flags.model import FlagSpec, Segment
from underlay.http import create_app

app = create_app("flags")
Key = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class FlagUpdate(FlagSpec):
    version: int = Field(ge=1, description="The version you read; a stale one gets 409")


class Toggle(BaseModel):
    enabled: bool | None = Field(default=None, description="Set it; omit to flip")
    version: int | None = Field(default=None, ge=1)


class EvaluateRequest(BaseModel):
    context: dict[str, Any] = Field(default_factory=dict)


class SegmentUpdate(Segment):
    version: int = Field(ge=1)


def _actor() -> str:
    return app.identity.sub if app.identity else "unknown"


def _json(status: int, body: Any):  # a Response; no annotation, as Powertools reads it
    return Response(status, "application/json", json.dumps(body))


@app.handles("GET /v1/feature-flags")
def list_flags(
    *,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[Literal["enabled", "disabled", "archived"] | None, Query()] = None,
    stale: Annotated[bool | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    page = store.list_flags(tag=tag, state=state, stale=stale, limit=limit, cursor=cursor)
    return {"flags": [service.view(f) for f in page.flags], "next_cursor": page.next_cursor}


@app.handles("POST /v1/feature-flags")
def create(spec: Annotated[FlagSpec, Body()]):
    return _json(201, service.view(service.create(spec, _actor())))


@app.handles("POST /v1/feature-flags/evaluate")
def evaluate(request: Annotated[EvaluateRequest | None, Body()] = None) -> dict[str, Any]:
    identity = app.identity
    claims = (
        {"sub": identity.sub, "tier": identity.tier, "tenant": identity.tenant, "roles": list(identity.roles)}
        if identity
        else {}
    )
    context = {
        **(request.context if request else {}),
        **claims,
    }  # the token's claims win: no evaluating as someone else
    results = flags.client().evaluate_all(context)
    return {
        "flags": [{"key": r.key, "value": r.value, "variant": r.variant, "reason": r.reason} for r in results]
    }


@app.handles("GET /v1/feature-flags/{key}")
def get_flag(key: Key) -> dict[str, Any]:
    return service.view(store.get(key))


@app.handles("PUT /v1/feature-flags/{key}")
def update(key: Key, request: Annotated[FlagUpdate, Body()]) -> dict[str, Any]:
    spec = FlagSpec.model_validate(request.model_dump(exclude={"version"}))
    return service.view(service.update(key, spec, request.version, _actor()))


@app.handles("POST /v1/feature-flags/{key}/toggle")
def toggle(key: Key, request: Annotated[Toggle | None, Body()] = None) -> dict[str, Any]:
    wanted = request or Toggle()
    return service.view(service.toggle(key, wanted.enabled, wanted.version, _actor()))


@app.handles("DELETE /v1/feature-flags/{key}")
def archive(key: Key) -> dict[str, Any]:
    return service.view(service.archive(key, _actor()))


@app.handles("POST /v1/feature-flags/{key}/restore")
def restore(key: Key) -> dict[str, Any]:
    return service.view(service.restore(key, _actor()))


@app.handles("GET /v1/feature-flags/{key}/analytics")
def analytics(key: Key, days: Annotated[int, Query(ge=1, le=90)] = 7) -> dict[str, Any]:
    store.get(key)  # 404 for an unknown flag
    return flags.analytics(key, days)


@app.handles("GET /v1/segments")
def list_segments() -> dict[str, Any]:
    return {"segments": store.list_segments()}


@app.handles("POST /v1/segments")
def create_segment(segment: Annotated[Segment, Body()]):
    return _json(201, service.put_segment(segment, None))


@app.handles("GET /v1/segments/{key}")
def get_segment(key: Key) -> dict[str, Any]:
    segment, version = store.get_segment(key)
    return {**segment.model_dump(mode="json"), "version": version}


@app.handles("PUT /v1/segments/{key}")
def update_segment(key: Key, request: Annotated[SegmentUpdate, Body()]) -> dict[str, Any]:
    segment = Segment.model_validate({**request.model_dump(exclude={"version"}), "key": key})
    return service.put_segment(segment, request.version)


@app.handles("DELETE /v1/segments/{key}")
def delete_segment(key: Key):
    service.delete_segment(key)
    return Response(204, "application/json", "")


handler = app.lambda_handler
