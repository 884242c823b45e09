"""Cache API: statistics, invalidation by key, pattern and tag, warming. Logic: `underlay.cache`.

No `from __future__ import annotations` here: Powertools reads the route signatures at runtime.
"""

from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, Field
from underlay import audit
from underlay.cache import get_cache, warming
from underlay.http import create_app

app = create_app("cache")
KeyParam = Annotated[str, Path(min_length=1, max_length=512)]


class WarmRequest(BaseModel):
    warmers: list[str] = Field(
        default_factory=list, max_length=100, description="Warmers to run; all if empty"
    )


@app.handles("GET /v1/cache/stats")
def stats() -> dict[str, Any]:
    return get_cache().statistics()


def _invalidated(kind: str, target: str, deleted: int) -> dict[str, Any]:
    audit.record("cache.invalidate", f"cache_{kind}", target, after={"deleted": deleted})
    return {kind: target, "deleted": deleted}


@app.handles("DELETE /v1/cache/keys/{key}")
def delete_key(key: KeyParam) -> dict[str, Any]:
    key = unquote(key)  # path parameters arrive as sent; keys may hold escaped characters
    return _invalidated("key", key, get_cache().invalidate(key))


@app.handles("DELETE /v1/cache/pattern/{pattern}")
def delete_pattern(pattern: Annotated[str, Path(min_length=1, max_length=256)]) -> dict[str, Any]:
    pattern = unquote(pattern)
    return _invalidated("pattern", pattern, get_cache().delete_by_pattern(pattern))


@app.handles("DELETE /v1/cache/tags/{tag}")
def delete_tag(tag: Annotated[str, Path(min_length=1, max_length=128)]) -> dict[str, Any]:
    tag = unquote(tag)
    return _invalidated("tag", tag, get_cache().delete_by_tag(tag))


@app.handles("POST /v1/cache/warm")
def warm(request: Annotated[WarmRequest | None, Body()] = None) -> dict[str, Any]:
    report = warming.run(get_cache(), request.warmers if request else None)
    audit.record("cache.warm", "cache_warmers", ",".join(r["name"] for r in report["warmers"]), after=report)
    return report


handler = app.lambda_handler
