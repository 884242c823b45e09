"""The Redis cache: `get_cache()` is the process-wide client; key builders in `keys`, warmers in `warming`.

    from underlay.cache import get_cache, keys

    cache = get_cache()
    movie = cache.get_or_compute(keys.MOVIE_DETAIL.build(id=42), lambda: load_movie(42), tags=["movies"])
    cache.delete_by_tag("movies")

Importing this package is cheap: redis is imported on the first call that needs it.
"""

from __future__ import annotations

import threading

from underlay.cache.client import Cache
from underlay.cache.keys import CacheKey, KeyBuilder

__all__ = ["Cache", "CacheKey", "KeyBuilder", "get_cache", "reset_cache"]

_lock = threading.Lock()
_cache: Cache | None = None


def get_cache() -> Cache:
    """The cache of this process, reused across invocations (its counters and breaker with it)."""
    global _cache
    if _cache is None:
        with _lock:
            if _cache is None:
                _cache = Cache()
    return _cache


def reset_cache() -> None:
    """Forget the process's cache (tests, and the local stack between runs)."""
    global _cache
    with _lock:
        _cache = None
