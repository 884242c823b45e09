"""Admin benchmarks against a redis-server this module starts on a free port (and stops).

- `admin.metrics_overhead_ratio`: one `GET /v1/health/live` through the real health handler with the RED metrics
  aggregation on (`admin.metrics_enabled`, default flush interval: counted in process, one pipelined Redis round
  trip per second per instance) ÷ the same with it off. The live probe is exempt from rate limiting and touches
  nothing else, so this is the worst case: any request that does real work dilutes the hook's share. Logs and EMF
  are produced as on Lambda (into /dev/null). Interleaved rounds, median of the per-round ratios.
- `admin.metrics_overhead_ratio_unbatched`: the same with `admin.metrics_flush_seconds=0`, one pipelined round
  trip on every request (not a target: it shows what the batching buys). Also the µs per request of each.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.perf.fixtures import patched_env
from tests.perf.registry import Figures, Target, benchmark

ROUNDS, REQUESTS = 15, 400


def _unbind_logger() -> None:
    import logging
    import sys

    for handler in logging.getLogger("underlay").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)  # where `make bench` sends every benchmark's output


def _per_request(handler: Callable[[dict[str, Any], Any], Any], event: dict[str, Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        handler(event, None)
    return (time.perf_counter() - started) / n


def _switch(enabled: bool, flush_seconds: float) -> None:
    from underlay.settings import reset_settings

    os.environ["UNDERLAY_ADMIN__METRICS_ENABLED"] = "true" if enabled else "false"
    os.environ["UNDERLAY_ADMIN__METRICS_FLUSH_SECONDS"] = str(flush_seconds)
    reset_settings()


def _overhead(handler: Callable[..., Any], event: dict[str, Any], flush_seconds: float) -> tuple[float, ...]:
    """(median ratio on/off, median µs on, median µs off) over interleaved rounds."""
    for enabled in (True, False):  # warm both paths: connection, TTL refresh, settings
        _switch(enabled, flush_seconds)
        assert handler(event, None)["statusCode"] == 200
        _per_request(handler, event, 200)
    ratios, on, off = [], [], []
    for i in range(ROUNDS):
        timing = {}
        for enabled in (True, False) if i % 2 else (False, True):
            _switch(enabled, flush_seconds)
            timing[enabled] = _per_request(handler, event, REQUESTS)
        ratios.append(timing[True] / timing[False])
        on.append(timing[True] * 1e6)
        off.append(timing[False] * 1e6)
    return statistics.median(ratios), statistics.median(on), statistics.median(off)


@benchmark("admin", targets=(Target("admin.metrics_overhead_ratio", "<=", 1.1),))
def admin_metrics_overhead() -> Figures:
    from infra.local.stack import RedisProcess
    from tests.conftest import http_event

    with (
        RedisProcess() as url,
        patched_env(
            {
                "UNDERLAY_REDIS__URL": url,
                "UNDERLAY_REDIS__PREFIX": "bench:",
                "UNDERLAY_STAGE": "dev",
                "POWERTOOLS_METRICS_DISABLED": "false",
                "UNDERLAY_ADMIN__METRICS_ENABLED": "true",
                "UNDERLAY_ADMIN__METRICS_FLUSH_SECONDS": "1.0",
            }
        ),
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),  # the logger and EMF bind to it (created after the caches reset)
    ):
        from functions.health.app import handler

        event = http_event("GET", "/v1/health/live")
        batched = _overhead(handler, event, 1.0)  # the default: written at most once a second per instance
        unbatched = _overhead(handler, event, 0)  # one pipelined round trip on every request
        _switch(True, 0)
        handler(event, None)  # writes what the last batch left
        from redis import Redis

        stored = Redis.from_url(url).hget("bench:metrics:http:GET /v1/health/live", "c:200")
        _unbind_logger()  # the logger's handler writes to the sink, closed next: point it at stderr
    expected = 2 * (1 + 200 + ROUNDS * REQUESTS) + 1  # every request with it on was counted, none with it off
    if int(stored or 0) != expected:
        raise AssertionError(f"counted {stored!r} requests with metrics on, expected {expected}")
    figures = {
        "admin.metrics_overhead_ratio": round(batched[0], 3),
        "admin.metrics_overhead_ratio_unbatched": round(unbatched[0], 3),
        "admin.request_us.metrics_on": round(batched[1], 1),
        "admin.request_us.metrics_on_unbatched": round(unbatched[1], 1),
        "admin.request_us.metrics_off": round(batched[2], 1),
    }
    print(f"  {figures}", file=sys.stderr)
    return figures
