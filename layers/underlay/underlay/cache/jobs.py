"""Cache job types: `cache.warm` (warmers as a background job, with progress) and `cache.stats` (the schedule
that emits CacheStatisticsCollected). The jobs worker (issue 7) runs them; nothing here imports redis eagerly."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from underlay.job_types import JobContext, job_type


class WarmPayload(BaseModel):
    warmers: list[str] = Field(default_factory=list, max_length=100)


class StatsPayload(BaseModel):
    top: int = Field(default=10, ge=0, le=100)


@job_type("cache.warm", WarmPayload, max_attempts=2, timeout_s=280)
def warm(payload: WarmPayload, ctx: JobContext) -> dict[str, Any]:
    """Run the registered cache warmers (all, or the named ones), reporting progress after each."""
    from underlay.cache import get_cache, warming

    def progress(done: int, total: int, name: str) -> None:
        ctx.progress(100 * done // max(total, 1), f"warmed {name}")

    report = warming.run(get_cache(), payload.warmers, progress=progress)
    return {"keys": report["keys"], "failed": report["failed"]}


@job_type("cache.stats", StatsPayload, max_attempts=1, timeout_s=60)
def collect_statistics(payload: StatsPayload, ctx: JobContext) -> dict[str, Any]:
    """Collect cache statistics and emit CacheStatisticsCollected."""
    from underlay import events
    from underlay.cache import get_cache

    stats = get_cache().statistics(top=payload.top)
    events.publish("CacheStatisticsCollected", stats)
    return {"hit_ratio": stats["hit_ratio"], "keys": stats["keys"]["total"]}
