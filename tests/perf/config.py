"""Configuration benchmarks against an in-process moto server (as `make dev` runs it).

- `aws_calls.config_warm_read`: AWS calls of 1,000 warm `get_settings()` reads plus request-boundary checks
  within the refresh interval: target 0.
- `aws_calls.config_cold_load`: AWS calls of a cold load with runtime values stored: the Query of the config
  table, and the PutEvents that carries ConfigurationLoaded (in a request it shares the request's batch): ≤ 2.
- `aws_calls.config_stamp_check`: AWS calls of one due check whose stamp did not move (one GetItem).
- `config.warm_read_ns`: one warm `get_settings()` call.
"""

from __future__ import annotations

import os
import time

from tests.perf.fixtures import moto_stack
from tests.perf.registry import Figures, Target, benchmark

READS = 1000


@benchmark(
    "config",
    targets=(Target("aws_calls.config_warm_read", "<=", 0), Target("aws_calls.config_cold_load", "<=", 2)),
)
def config_benchmarks() -> Figures:
    from underlay import events
    from underlay.aws import count_aws_calls
    from underlay.config import runtime, service
    from underlay.settings import get_settings, reset_settings

    with moto_stack():
        os.environ["UNDERLAY_CONFIG__REFRESH_SECONDS"] = "60"
        reset_settings()
        with events.batch():
            service.put("cache.default_ttl_seconds", 900, expected_version=None, actor="bench")
            service.put("flags.refresh_seconds", 2, expected_version=None, actor="bench")
        reset_settings()
        with count_aws_calls() as cold, events.batch():  # the ConfigurationLoaded event included
            get_settings()
        with count_aws_calls() as warm:
            for _ in range(READS):
                get_settings()
                runtime.refresh_if_due()
        with count_aws_calls() as check:
            runtime._checked_at = 0.0  # make the next check due
            runtime.refresh_if_due()
        started = time.perf_counter_ns()
        for _ in range(100_000):
            get_settings()
        per_read = (time.perf_counter_ns() - started) / 100_000
        os.environ.pop("UNDERLAY_CONFIG__REFRESH_SECONDS", None)
    print(f"  cold load calls: {cold.by_operation}", flush=True)
    return {
        "aws_calls.config_warm_read": warm.total,
        "aws_calls.config_cold_load": cold.total,
        "aws_calls.config_stamp_check": check.total,
        "config.warm_read_ns": round(per_read, 1),
    }
