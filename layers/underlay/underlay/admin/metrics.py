"""Prometheus metrics aggregated across every instance in Redis, served by `GET /v1/metrics`.

Requests are counted in process and written by the request hook (`underlay.admin.recorder`) in one pipelined
round trip at most every `admin.metrics_flush_seconds` (1 s; 0 writes on every request), and at once with any
request that records an error. So a busy instance pays a few microseconds per request, not a Redis round trip.
The price: an instance's counts since its last write wait for its next request, and are lost if Lambda retires
it before one (at most one interval's worth per instance). The job worker writes once per finished attempt.
Read and rendered in the text exposition format (0.0.4) per scrape.

Redis keys (under the configured prefix):
- `metrics:http:<METHOD> <route>`: a hash per route (the declared path template, or `$default` for requests
  that matched none: bounded labels). Fields `c:<status>` (requests), `b:<i>` (requests whose duration fell in
  bucket i, not cumulative: three HINCRBYs per write instead of fourteen) and `us` (total microseconds). Its TTL
  (`admin.metrics_ttl_days`) is refreshed at most every ten minutes per instance, not per write.
- `metrics:jobs`: `<outcome>|<job type>` -> finished attempts (succeeded, failed, retried, cancelled).
- `metrics:ratelimit`: `<tier>|<route>` -> requests refused with 429.
- `metrics:ratelimit:hour:<h>`: refusals in clock hour `h` (epoch hours), for the 24 h figure of the stats.
- the cache's own hit/miss hash (`underlay.cache`), read as it is.

Rate-limit refusals are counted in process by `count_violation` (one call from the limiter's deny path, no I/O)
and written with the request counts.

Exposed families: `http_requests_total{method,route,status}`, `http_request_duration_seconds{method,route}`
(histogram, buckets `BUCKETS`), `cache_hits_total{cache_type}`, `cache_misses_total{cache_type}`,
`jobs_total{type,outcome}` and `ratelimit_violations_total{route,tier}`.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.client import Pipeline
    from underlay.admin.settings import AdminSettings
    from underlay.declaration import Route

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BOUNDS_US = tuple(round(b * 1_000_000) for b in BUCKETS)
_BUCKET_FIELDS = tuple(f"b:{i}" for i in range(len(BUCKETS) + 1))  # the last one is +Inf
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")  # `$default` requests, by method
JOB_OUTCOMES = ("succeeded", "failed", "retried", "cancelled")
HOUR_TTL_SECONDS = 25 * 3600 + 600
_EXPIRE_EVERY_SECONDS = 600.0

_keys: dict[tuple[str, str, str], str] = {}  # (prefix, method, route) -> the route's hash key
_statuses: dict[int, str] = {}  # status -> field name
_expire_due: dict[str, float] = {}  # key -> when this instance next refreshes its TTL (monotonic)
# (key, hash field) -> count not yet written; a field of None is a plain counter (INCRBY).
_buffer: Counter[tuple[str, str | None]] = Counter()
_lock = threading.Lock()
_last_flush = float("-inf")  # monotonic; an instance's first request writes at once


def _key(*parts: str) -> str:
    from underlay.redis_client import key

    return key("metrics", *parts)


def http_key(method: str, route: str) -> str:
    from underlay.settings import get_settings

    prefix = get_settings().redis.prefix
    found = _keys.get((prefix, method, route))
    if found is None:
        if len(_keys) > 4096:  # routes are declared; only prefix changes (tests) could grow it
            _keys.clear()
        found = _keys[(prefix, method, route)] = f"{prefix}metrics:http:{method} {route}"
    return found


def route_labels(method: str, route: Route | None) -> tuple[str, str]:
    """(method, route) labels: the declared route's, or the request's method (a known one) and `$default`."""
    if route is not None:
        return route.method, route.path
    return (method if method in METHODS else "OTHER"), "$default"


# --- writing ----------------------------------------------------------------------------------------


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one request in process (three counter increments; written by the next due flush)."""
    key = http_key(method, route)
    us = int(seconds * 1_000_000)
    field = _statuses.get(status)
    if field is None:
        field = _statuses[status] = f"c:{status}"
    bucket = _BUCKET_FIELDS[bisect_left(_BOUNDS_US, us)]
    with _lock:
        _buffer[(key, field)] += 1
        _buffer[(key, bucket)] += 1
        _buffer[(key, "us")] += us


def count_violation(route: str, tier: str) -> None:
    """A request refused by the rate limiter (called from its deny path): counted in process, no I/O here."""
    from underlay.admin.settings import admin_settings

    hourly = _key("ratelimit", "hour", str(int(time.time() // 3600)))
    prometheus = (_key("ratelimit"), f"{tier}|{route}") if admin_settings().metrics_enabled else None
    with _lock:
        _buffer[(hourly, None)] += 1
        if prometheus is not None:
            _buffer[prometheus] += 1


def flush_due(cfg: AdminSettings) -> bool:
    """Are there counts, and has `admin.metrics_flush_seconds` passed since this instance last wrote?"""
    return bool(_buffer) and time.monotonic() - _last_flush >= cfg.metrics_flush_seconds


def take_counts() -> Counter[tuple[str, str | None]]:
    """The counts not yet written (the buffer starts again, and so does the flush interval)."""
    global _buffer, _last_flush
    with _lock:
        taken, _buffer = _buffer, Counter()
        _last_flush = time.monotonic()
    return taken


def restore_counts(counts: Counter[tuple[str, str | None]]) -> None:
    """Keep counts a failed write did not store, for the next flush (bounded: routes x statuses x buckets)."""
    if counts:
        with _lock:
            _buffer.update(counts)


def reset_counts() -> None:
    """Forget unwritten counts and flush timing (tests)."""
    global _last_flush
    take_counts()
    _last_flush = float("-inf")


def queue_counts(pipe: Pipeline, counts: Counter[tuple[str, str | None]], cfg: AdminSettings) -> None:
    """Queue the writes of `counts`: HINCRBY per hash field, INCRBY per plain counter, and each key's EXPIRE
    at most every ten minutes per instance."""
    ttls: dict[str, int] = {}
    for (key, field), n in counts.items():
        if field is None:
            pipe.incrby(key, n)
            ttls[key] = HOUR_TTL_SECONDS
        else:
            pipe.hincrby(key, field, n)
            ttls[key] = cfg.metrics_ttl_days * 86400
    now = time.monotonic()
    if len(_expire_due) > 4096:
        _expire_due.clear()
    for key, ttl in ttls.items():
        if _expire_due.get(key, 0.0) <= now:
            _expire_due[key] = now + _EXPIRE_EVERY_SECONDS
            pipe.expire(key, ttl)


def queue_job(pipe: Pipeline, job_type: str, outcome: str, cfg: AdminSettings) -> None:
    key = _key("jobs")
    pipe.hincrby(key, f"{outcome}|{job_type}", 1)
    pipe.expire(key, cfg.metrics_ttl_days * 86400)


# --- reading ----------------------------------------------------------------------------------------


def violations_24h(*, now: float | None = None) -> int:
    """Requests refused by the rate limiter in the last 24 clock hours (the current one included)."""
    from underlay.admin.recorder import redis_read
    from underlay.redis_client import get_redis

    hour = int((time.time() if now is None else now) // 3600)
    keys = [_key("ratelimit", "hour", str(h)) for h in range(hour - 23, hour + 1)]
    return sum(int(v) for v in redis_read(lambda: get_redis().mget(keys)) if v is not None)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _text(fields: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in fields.items()}


def _pairs(fields: dict[bytes, bytes]) -> list[tuple[str, str, int]]:
    """`a|b` -> n hash fields as sorted (a, b, n)."""
    found = []
    for field, n in _text(fields).items():
        first, _, second = field.partition("|")
        found.append((first, second, n))
    return sorted(found)


def render() -> str:
    """Every family in the text exposition format. Raises `NotFoundError` when `admin.metrics_enabled` is off
    and `DependencyUnavailableError` when Redis is down."""
    from underlay import declaration
    from underlay.admin.recorder import redis_read
    from underlay.admin.settings import admin_settings
    from underlay.errors import NotFoundError

    if not admin_settings().metrics_enabled:
        raise NotFoundError("Metrics are switched off (admin.metrics_enabled).")
    from underlay.cache import get_cache
    from underlay.redis_client import get_redis

    routes = sorted(
        {(r.method, r.path) for r in declaration.ROUTES} | {(m, "$default") for m in (*METHODS, "OTHER")},
        key=lambda mr: (mr[1], mr[0]),
    )
    cache_key = get_cache().stats_key

    def read() -> list[Any]:
        pipe = get_redis().pipeline(transaction=False)
        for method, route in routes:
            pipe.hgetall(http_key(method, route))
        pipe.hgetall(cache_key)
        pipe.hgetall(_key("jobs"))
        pipe.hgetall(_key("ratelimit"))
        return list(pipe.execute())

    replies = redis_read(read)
    *per_route, cache_counts, jobs, violations = replies
    lines: list[str] = []
    _http_families(lines, list(zip(routes, per_route, strict=True)))
    _counter_families(lines, cache_counts, jobs, violations)
    return "\n".join(lines) + "\n"


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _http_families(lines: list[str], per_route: list[tuple[tuple[str, str], dict[bytes, bytes]]]) -> None:
    _family(
        lines, "http_requests_total", "counter", "HTTP requests served, by method, route template and status."
    )
    for (method, route), fields in per_route:
        counts = _text(fields)
        for status in sorted(int(f[2:]) for f in counts if f.startswith("c:")):
            labels = _labels(method=method, route=route, status=str(status))
            lines.append(f"http_requests_total{labels} {counts[f'c:{status}']}")

    _family(
        lines, "http_request_duration_seconds", "histogram", "HTTP request duration in seconds, by route."
    )
    for (method, route), fields in per_route:
        counts = _text(fields)
        if not any(f.startswith("b:") for f in counts):
            continue
        cumulative = 0
        for i, bound in enumerate((*BUCKETS, None)):
            cumulative += counts.get(_BUCKET_FIELDS[i], 0)
            le = "+Inf" if bound is None else repr(bound)
            lines.append(
                f"http_request_duration_seconds_bucket{_labels(method=method, route=route, le=le)} {cumulative}"
            )
        plain = _labels(method=method, route=route)
        lines.append(f"http_request_duration_seconds_sum{plain} {counts.get('us', 0) / 1_000_000!r}")
        lines.append(f"http_request_duration_seconds_count{plain} {cumulative}")


def _counter_families(
    lines: list[str],
    cache_counts: dict[bytes, bytes],
    jobs: dict[bytes, bytes],
    violations: dict[bytes, bytes],
) -> None:
    by_type = []
    for field, n in _text(cache_counts).items():
        data_type, _, kind = field.rpartition(":")
        by_type.append((data_type, kind, n))
    by_type.sort()
    for kind, help_text in (
        ("hits", "Cache lookups that found a value"),
        ("misses", "Cache lookups that missed"),
    ):
        _family(lines, f"cache_{kind}_total", "counter", f"{help_text}, by cache data type (all instances).")
        for data_type, found_kind, n in by_type:
            if found_kind == kind:
                lines.append(f"cache_{kind}_total{_labels(cache_type=data_type)} {n}")

    _family(lines, "jobs_total", "counter", "Finished job attempts, by job type and outcome.")
    for outcome, job_type, n in _pairs(jobs):
        lines.append(f"jobs_total{_labels(type=job_type, outcome=outcome)} {n}")

    _family(
        lines,
        "ratelimit_violations_total",
        "counter",
        "Requests refused by the rate limiter, by route and tier.",
    )
    for tier, route, n in _pairs(violations):
        lines.append(f"ratelimit_violations_total{_labels(route=route, tier=tier)} {n}")
