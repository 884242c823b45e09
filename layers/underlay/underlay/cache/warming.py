"""Cache warmers, registered in code, run by `POST /v1/cache/warm` and the `cache.warm` job.

    from underlay.cache import keys
    from underlay.cache.warming import warmer

    @warmer("home-banners")
    def home_banners(cache):
        cache.set(keys.HOME_BANNERS.build(), load_banners())
        return 1  # keys warmed

A warmer that raises is reported as failed; the others still run. `progress(done, total, name)` is called
after each one, which the job uses to report progress.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from underlay.errors import FieldError, ValidationFailedError

if TYPE_CHECKING:
    from underlay.cache.client import Cache

Warmer = Callable[["Cache"], int]
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
WARMERS: dict[str, Warmer] = {}


def warmer(name: str) -> Callable[[Warmer], Warmer]:
    """Register the decorated function as the warmer `name`; it returns how many keys it wrote."""
    if not _NAME.match(name):
        raise ValueError(f"warmer name {name!r} must be a lowercase slug")

    def register(fn: Warmer) -> Warmer:
        if WARMERS.get(name, fn) is not fn:
            raise ValueError(f"warmer {name!r} is registered twice")
        WARMERS[name] = fn
        return fn

    return register


def select(names: Sequence[str] | None) -> list[str]:
    """The warmers to run: all when `names` is empty; 422 naming any unknown one."""
    if not names:
        return sorted(WARMERS)
    unknown = [n for n in names if n not in WARMERS]
    if unknown:
        raise ValidationFailedError(
            f"Unknown warmers: {', '.join(sorted(unknown))}.",
            errors=[FieldError("warmers", f"unknown warmer {n!r}") for n in unknown],
        )
    return list(dict.fromkeys(names))


def run(
    cache: Cache,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Run warmers one after another; emit CacheWarmed with the outcome."""
    from underlay import events
    from underlay.observability import get_logger

    selected = select(names)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for done, name in enumerate(selected, start=1):
        began = time.perf_counter()
        try:
            written = int(WARMERS[name](cache))
            results.append({"name": name, "status": "succeeded", "keys": written})
        except Exception as error:  # one bad warmer must not stop the rest
            get_logger().exception("cache warmer failed", extra={"warmer": name})
            results.append({"name": name, "status": "failed", "keys": 0, "error": type(error).__name__})
        results[-1]["duration_ms"] = round((time.perf_counter() - began) * 1000, 2)
        if progress is not None:
            progress(done, len(selected), name)
    report = {
        "warmers": results,
        "keys": sum(r["keys"] for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    events.publish("CacheWarmed", report)
    return report
