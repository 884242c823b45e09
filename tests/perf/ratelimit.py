"""Rate-limit benchmarks against a redis-server this module starts on a free port (and stops).

- `ratelimit.check_ratio_vs_raw`: one `RateLimiter.check` (allowed) ÷ one raw redis-py GET of the same key, same
  client, interleaved rounds, median of the per-round ratios. Also `ratelimit.check_us` and `ratelimit.raw_get_us`.
- `ratelimit.bytes_per_key`: the largest `MEMORY USAGE` of a limiter key over typical subjects (IPv4, IPv6, a
  UUID `sub`, and a 200-character `sub`, which is hashed into the key).
- `ratelimit.blocked_flood_ratio_vs_limits`: checks per second for a caller already over its limit ÷ the same
  through the `limits` library (`MovingWindowRateLimiter` on `RedisStorage`, same server), interleaved timed
  rounds, median. Ours is served by the deny cache (the default 1 s maximum, so Redis is still asked about
  once a second); `..._no_deny_cache` is the same with the deny cache off, i.e. one Lua round trip per check
  on both sides.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.perf.registry import Figures, Target, benchmark

ROUNDS, OPS = 15, 2000
FLOOD_ROUNDS, FLOOD_SECONDS = 5, 0.4


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of our own, stopped after; yields its URL."""
    from infra.local.stack import RedisProcess

    with RedisProcess() as url:
        yield url


def _limiter(client: Any, limit: int, *, period: int = 60, deny_cache: float = 1.0) -> Any:
    from underlay.ratelimit import RateLimiter
    from underlay.redis_client import CircuitBreaker
    from underlay.settings import RateLimitSettings, RateTier

    cfg = RateLimitSettings(
        tiers={"free": RateTier(limit=limit, period_seconds=period)}, deny_cache_max_seconds=deny_cache
    )
    return RateLimiter(cfg, client=client, breaker=CircuitBreaker(3, 30))


def _per_op(fn: Callable[[], object], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - started) / ops


def _check_ratio(client: Any) -> Figures:
    limiter = _limiter(client, 10**9)
    subject = str(uuid.uuid4())
    key = limiter.key(subject, "health")

    def check() -> object:
        return limiter.check(subject, "health", "free")

    def raw() -> object:
        return client.get(key)

    assert check().allowed  # type: ignore[attr-defined]
    for _ in range(500):  # warm both paths
        check(), raw()
    ratios, ours, theirs = [], [], []
    for i in range(ROUNDS):
        if i % 2:
            t_raw, t_check = _per_op(raw, OPS), _per_op(check, OPS)
        else:
            t_check, t_raw = _per_op(check, OPS), _per_op(raw, OPS)
        ratios.append(t_check / t_raw)
        ours.append(t_check * 1e6)
        theirs.append(t_raw * 1e6)
    figures = {
        "ratelimit.check_ratio_vs_raw": round(statistics.median(ratios), 3),
        "ratelimit.check_us": round(statistics.median(ours), 1),
        "ratelimit.raw_get_us": round(statistics.median(theirs), 1),
    }
    print(
        f"  check {figures['ratelimit.check_us']} µs, raw GET {figures['ratelimit.raw_get_us']} µs, "
        f"ratio {figures['ratelimit.check_ratio_vs_raw']} (rounds {min(ratios):.2f}..{max(ratios):.2f})",
        file=sys.stderr,
    )
    return figures


def _bytes_per_key(client: Any) -> Figures:
    limiter = _limiter(client, 60)
    subjects = ("ip:203.0.113.10", "ip:2001:db8:85a3::8a2e:370:7334", str(uuid.uuid4()), "auth0|" + "x" * 194)
    sizes = {}
    for subject in subjects:
        assert limiter.check(subject, "health", "free").allowed
        sizes[subject[:24]] = int(client.memory_usage(limiter.key(subject, "health")))
    print(f"  MEMORY USAGE per key: {sizes}", file=sys.stderr)
    return {"ratelimit.bytes_per_key": max(sizes.values())}


def _throughput(fn: Callable[[], object]) -> float:
    count, started = 0, time.perf_counter()
    deadline = started + FLOOD_SECONDS
    while True:
        for _ in range(50):
            fn()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def _blocked_flood(url: str, client: Any) -> Figures:
    from limits import parse
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    theirs = MovingWindowRateLimiter(RedisStorage(url))
    item = parse("10/hour")  # no unit comes back during the run, on either side
    limited, uncached = _limiter(client, 10, period=3600), _limiter(client, 10, period=3600, deny_cache=0)
    for _ in range(10):
        theirs.hit(item, "flood")
        limited.check("flood", "health", "free")
        uncached.check("flood-nc", "health", "free")

    def ours() -> object:
        assert not limited.check("flood", "health", "free").allowed
        return None

    def ours_uncached() -> object:
        assert not uncached.check("flood-nc", "health", "free").allowed
        return None

    def limits_hit() -> object:
        assert not theirs.hit(item, "flood")
        return None

    rates: dict[str, list[float]] = {"ours": [], "uncached": [], "limits": []}
    for _ in range(FLOOD_ROUNDS):
        rates["ours"].append(_throughput(ours))
        rates["limits"].append(_throughput(limits_hit))
        rates["uncached"].append(_throughput(ours_uncached))
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(
        "  blocked checks/s: ours {ours:,.0f}, ours without deny cache {uncached:,.0f}, "
        "limits moving window {limits:,.0f}".format(**median),
        file=sys.stderr,
    )
    return {
        "ratelimit.blocked_flood_ratio_vs_limits": round(median["ours"] / median["limits"], 1),
        "ratelimit.blocked_flood_ratio_vs_limits_no_deny_cache": round(
            median["uncached"] / median["limits"], 2
        ),
    }


@benchmark(
    "ratelimit",
    targets=(
        Target("ratelimit.check_ratio_vs_raw", "<=", 1.3),
        Target("ratelimit.bytes_per_key", "<=", 128),
        Target("ratelimit.blocked_flood_ratio_vs_limits", ">=", 10),
    ),
)
def ratelimit_figures() -> Figures:
    import redis

    with redis_server() as url:
        client = redis.Redis.from_url(url)
        figures = _check_ratio(client)
        figures.update(_bytes_per_key(client))
        figures.update(_blocked_flood(url, client))
        client.close()
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(ratelimit_figures()))
