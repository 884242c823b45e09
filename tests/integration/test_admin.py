"""The admin API on moto and a real redis-server: stats with data present, error groups and spikes, and the
Prometheus metrics (format checked with prometheus_client's parser, aggregation across processes)."""

from __future__ import annotations

import io
import json
import multiprocessing
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any

import pytest
from pydantic import BaseModel
from underlay.job_types import Backoff, JobContext, job_type
from underlay.settings import get_settings

from tests.conftest import http_event, run_queue


class Boom(BaseModel):
    order: str = "o-1"


@job_type("test.admin_boom", Boom, max_attempts=2, backoff=Backoff(base_s=600, jitter=False))  # no retry here
def admin_boom(payload: Boom, ctx: JobContext) -> None:
    raise LookupError(f"order {payload.order} has no customer 42")


@job_type("test.admin_ok", Boom, max_attempts=1)
def admin_ok(payload: Boom, ctx: JobContext) -> str:
    return "fine"


@pytest.fixture
def env(aws: dict[str, str], clean_env: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Every declared resource, Redis under a fresh prefix, and nothing left in process from other tests."""
    from underlay.admin import metrics

    clean_env.setenv("UNDERLAY_REDIS__PREFIX", f"t{uuid.uuid4().hex[:8]}:")
    clean_env.setenv(
        "UNDERLAY_ADMIN__METRICS_FLUSH_SECONDS", "0"
    )  # every request writes (see the batching test)
    metrics.reset_counts()
    yield aws
    metrics.reset_counts()


def admin(method: str, path: str, *, scopes: str | None = "platform:read", **kwargs: Any) -> dict[str, Any]:
    from functions.admin.app import handler

    return handler(http_event(method, path, scopes=scopes, **kwargs), None)


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def redis() -> Any:
    from underlay.redis_client import get_redis

    return get_redis()


# --- auth -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("path", ["/v1/admin/stats", "/v1/admin/errors", "/v1/metrics"])
def test_no_token_is_401_and_a_missing_scope_403(path: str) -> None:
    anonymous = admin("GET", path, scopes=None)
    assert anonymous["statusCode"] == 401 and body(anonymous)["code"] == "TOKEN_MISSING"
    assert anonymous["headers"]["WWW-Authenticate"].startswith("Bearer")
    wrong = admin("GET", path, scopes="flags:read jobs:read")
    assert wrong["statusCode"] == 403 and body(wrong)["code"] == "INSUFFICIENT_SCOPE"


@pytest.mark.usefixtures("env")
def test_metrics_needs_metrics_read_and_platform_read_is_not_enough() -> None:
    assert admin("GET", "/v1/metrics", scopes="platform:read")["statusCode"] == 403
    assert admin("GET", "/v1/metrics", scopes="metrics:read")["statusCode"] == 200


# --- stats ------------------------------------------------------------------------------------------


def _seed(env: dict[str, str]) -> None:
    """Flags in every state, jobs that succeed and fail, audit entries, cache hits and misses."""
    from underlay import audit, jobs
    from underlay.cache import get_cache, keys
    from underlay.flags import service
    from underlay.flags.model import FlagSpec

    for key, enabled in (("a", True), ("b", True), ("c", False), ("d", False)):
        service.create(FlagSpec(key=key, type="boolean", enabled=enabled, default=False), "ops")
    service.archive("d", "ops")
    for _ in range(2):
        jobs.enqueue("test.admin_ok", {})
    jobs.enqueue("test.admin_boom", {"order": "o-9"})
    run_queue(env)  # two succeed, one fails its first attempt (and waits for its retry)
    jobs.enqueue("test.admin_ok", {}, delay_seconds=600)  # still pending
    audit.record("test.thing", "thing", "t-1", actor="ops")
    cache = get_cache()
    cache.set(keys.MOVIE_DETAIL.build(id=1), {"title": "x"})
    cache.get(keys.MOVIE_DETAIL.build(id=1))
    cache.get(keys.MOVIE_DETAIL.build(id=1))
    cache.get(keys.MOVIE_DETAIL.build(id=2))
    cache.flush_stats()


def test_stats_with_data_present(env: dict[str, str]) -> None:
    from underlay.config import runtime, store

    _seed(env)
    store.write(
        env["UNDERLAY_TABLES__CONFIG"], "jobs.history_days", 20, current_version=0, previous=None, actor="t"
    )
    runtime.refresh_if_due(force=True)
    response = admin("GET", "/v1/admin/stats")
    assert response["statusCode"] == 200, response["body"]
    stats = body(response)
    assert list(stats) == ["stage", "config", "flags", "jobs", "audit", "cache", "rate_limits", "errors"]
    assert stats["config"] == {"version": 1, "runtime_keys": ["jobs.history_days"], "refresh_seconds": 5.0}
    assert stats["stage"] == {
        "stage": "dev",
        "service": "underlay",
        "version": "0.1.0",
        "release_id": "local",
    }
    assert stats["flags"] == {
        "total": 4,
        "by_state": {"enabled": 2, "disabled": 1, "archived": 1},
        "stale": 0,
    }
    jobs = stats["jobs"]
    assert jobs["last_24h"] == {"pending": 2, "running": 0, "succeeded": 2, "failed": 0, "cancelled": 0}
    assert set(jobs["queues"]) == {"jobs-high", "jobs-normal", "jobs-low"}
    assert jobs["queues"]["jobs-normal"]["delayed"] + jobs["queues"]["jobs-normal"]["in_flight"] >= 1
    # the flag writes and archive, and the test entry, are audited
    assert stats["audit"] == {"entries_24h": 6}
    cache = stats["cache"]
    assert cache["hits"] == 2 and cache["misses"] == 1 and cache["hit_ratio"] == pytest.approx(0.6667)
    assert cache["by_type"]["detail"]["hits"] == 2 and cache["memory"]["used_bytes"] > 0
    assert stats["rate_limits"] == {"violations_24h": 0}
    errors = stats["errors"]
    assert errors["last_24h"] == 1 and errors["groups"] == 1
    (top,) = errors["top"]
    assert top["type"] == "LookupError" and top["source"] == "job:test.admin_boom"
    assert top["message"] == "order o-<n> has no customer <n>" and top["last_24h"] == 1


def test_a_failing_section_reports_its_error_and_the_rest_still_answers(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay.admin import stats

    def broken() -> dict[str, Any]:
        raise RuntimeError("secret connection string redis://user:pw@host")

    def denied() -> dict[str, Any]:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "arn:aws:..."}}, "Query")

    monkeypatch.setitem(stats.SECTIONS, "flags", broken)
    monkeypatch.setitem(stats.SECTIONS, "rate_limits", denied)
    monkeypatch.delenv("UNDERLAY_TABLES__AUDIT")  # a function without the audit table
    response = admin("GET", "/v1/admin/stats")
    assert response["statusCode"] == 200
    found = body(response)
    assert found["flags"] == {"error": "RuntimeError"}  # the type, never the message
    assert found["rate_limits"] == {"error": "AWS error AccessDeniedException"}
    assert found["audit"] == {"error": "The audit table is not configured for this function."}
    assert found["jobs"]["last_24h"]["pending"] == 0 and "error" not in found["cache"]


def test_a_late_section_is_reported_and_does_not_hold_the_call(env: dict[str, str]) -> None:
    import threading

    from underlay.admin import stats

    release = threading.Event()
    try:
        found = stats.collect({"slow": lambda: release.wait(5), "fast": lambda: 1}, timeout=0.2)
    finally:
        release.set()
    assert found == {"slow": {"error": "no answer within 0.2 s"}, "fast": 1}


class _Invocation:
    """A Lambda context with `remaining` seconds left."""

    def __init__(self, remaining: float) -> None:
        self.remaining = remaining
        self.function_name, self.aws_request_id = "admin", "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining * 1000)


def test_the_stats_deadline_never_runs_past_the_invocation(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 1.4 s of the invocation left, the sections get 0.4 s (a second stays for the answer), not the
    configured 5 s: a slow section is reported, and the call is not a Lambda timeout."""
    import threading
    import time

    from underlay.admin import stats

    from functions.admin.app import handler

    release = threading.Event()
    monkeypatch.setattr(stats, "SECTIONS", {"slow": lambda: release.wait(5), "fast": lambda: 1})
    started = time.monotonic()
    try:
        response = handler(http_event("GET", "/v1/admin/stats", scopes="platform:read"), _Invocation(1.4))
    finally:
        release.set()
    assert response["statusCode"] == 200
    assert body(response) == {"slow": {"error": "no answer within 0.4 s"}, "fast": 1}
    assert time.monotonic() - started < 4  # generous: the 5 s setting was not waited for


def test_a_section_is_one_line_to_add(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from underlay.admin import stats

    monkeypatch.setattr(stats, "SECTIONS", dict(stats.SECTIONS))
    stats.section("payments")(lambda: {"settled_24h": 7})
    assert body(admin("GET", "/v1/admin/stats"))["payments"] == {"settled_24h": 7}


def test_stats_never_scan(env: dict[str, str]) -> None:
    from underlay.aws import count_aws_calls

    _seed(env)
    with count_aws_calls() as calls:
        assert admin("GET", "/v1/admin/stats")["statusCode"] == 200
    assert not any(op.endswith(".Scan") for op in calls.by_operation), calls.by_operation
    assert calls.by_operation["dynamodb.Query"] >= 1 + 5 + 1  # flags, jobs by status, audit


def test_rate_limit_violations_are_counted_for_24_h_and_prometheus(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay.ratelimit import reset_ratelimit
    from underlay.settings import reset_settings

    monkeypatch.setenv("UNDERLAY_RATELIMIT__TIERS", '{"free": {"limit": 2, "period_seconds": 60}}')
    reset_settings()
    reset_ratelimit()
    statuses = [admin("GET", "/v1/admin/errors", sub="greedy")["statusCode"] for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    monkeypatch.delenv("UNDERLAY_RATELIMIT__TIERS")
    reset_settings()
    reset_ratelimit()
    assert body(admin("GET", "/v1/admin/stats"))["rate_limits"] == {"violations_24h": 3}
    families = parse(admin("GET", "/v1/metrics", scopes="metrics:read"))
    (sample,) = families["ratelimit_violations"].samples
    assert sample.labels == {"route": "GET /v1/admin/errors", "tier": "free"} and sample.value == 3


# --- error groups -----------------------------------------------------------------------------------


def test_an_unexpected_error_in_any_function_is_grouped(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay.admin import stats

    def explode(*_: Any, **__: Any) -> Any:
        raise ZeroDivisionError(f"division by zero in shard {uuid.uuid4()}")

    monkeypatch.setattr(stats, "collect", explode)
    ids = []
    for i in range(7):
        event = http_event("GET", "/v1/admin/stats", scopes="platform:read")
        event["headers"]["x-correlation-id"] = f"corr-{i}"
        from functions.admin.app import handler

        response = handler(event, None)
        assert response["statusCode"] == 500 and "shard" not in response["body"]
        ids.append(f"corr-{i}")
    response = admin("GET", "/v1/admin/errors")
    assert response["statusCode"] == 200
    found = body(response)
    (group,) = found["groups"]
    assert group["type"] == "ZeroDivisionError" and group["count"] == 7 and group["last_24h"] == 7
    assert group["message"] == "division by zero in shard <uuid>"
    assert group["frame"].endswith("integration/test_admin.py:explode")
    assert group["source"] == "GET /v1/admin/stats"
    assert group["samples"] == ids[::-1][:5]  # the last five, newest first
    assert len(group["trend"]) == 24 and group["trend"][-1] == 7 and sum(group["trend"]) == 7
    assert group["first_seen"] <= group["last_seen"] and group["last_seen"].endswith("Z")
    assert found["next_cursor"] is None and found["trend"]["points"] == 24


def _error(message: str) -> BaseException:
    try:
        raise ValueError(message)
    except ValueError as caught:
        return caught


def test_groups_page_by_last_seen_with_a_signed_cursor(env: dict[str, str]) -> None:
    from underlay.admin import errors
    from underlay.admin.recorder import record_occurrence

    for i in range(5):  # five groups (the words differ), seen one after the other
        record_occurrence(
            _error(f"kind{'abcde'[i]} failed"), "job:x", correlation_id=f"c{i}", now=1_800_000_000 + i
        )
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor, _ = errors.list_groups(2, cursor, now=1_800_000_010)
        seen += [g["message"] for g in page]
        if cursor is None:
            break
    assert seen == [f"kind{c} failed" for c in "edcba"]
    forged = admin("GET", "/v1/admin/errors?cursor=eyJzIjoxfQ.AAAA")
    assert forged["statusCode"] == 400 and body(forged)["code"] == "INVALID_CURSOR"


def test_groups_seen_at_the_same_instant_page_completely(env: dict[str, str]) -> None:
    """Many groups with one last-seen score: each page goes on after the cursor's member, and none is lost."""
    from underlay.admin import errors
    from underlay.admin.recorder import record_occurrence

    for word in (f"kind{chr(97 + i)}{chr(97 + j)}" for i in range(5) for j in range(5)):  # 25 groups
        record_occurrence(_error(f"{word} failed"), "job:x", now=1_800_000_000.5)
    seen: list[str] = []
    cursor = None
    for _ in range(30):
        page, cursor, _ = errors.list_groups(2, cursor, now=1_800_000_010)
        seen += [g["fingerprint"] for g in page]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 25


def test_the_trend_is_hourly_over_the_last_24_hours(env: dict[str, str]) -> None:
    from underlay.admin import errors
    from underlay.admin.recorder import record_occurrence

    base = 1_800_000_000 - 1_800_000_000 % 3600
    for hours_ago, n in ((0, 3), (1, 1), (23, 2), (24, 5)):  # 24 h ago falls out of the window
        for _ in range(n):
            record_occurrence(_error("flaky"), "job:x", correlation_id="c", now=base - hours_ago * 3600 + 5)
    (group,), _, trend = errors.list_groups(now=base + 60)
    assert group["trend"][-1] == 3 and group["trend"][-2] == 1 and group["trend"][0] == 2
    assert group["last_24h"] == 6 and group["count"] == 11
    assert trend["from"] == errors._iso((base // 3600 - 23) * 3600)
    assert errors.summary(5, now=base + 60)["last_24h"] == 6


def test_a_spike_emits_error_aggregated_and_the_metric_once_per_group_per_hour(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay import events
    from underlay.admin.recorder import record_occurrence

    monkeypatch.setenv("UNDERLAY_ADMIN__ERROR_SPIKE_THRESHOLD", "3")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "admin")  # as CDK sets it on Lambda: no `service` dimension
    from underlay.settings import reset_settings

    reset_settings()
    get_settings()  # a warm instance: the configuration is loaded (its cold load publishes ConfigurationLoaded)
    published: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(events, "publish", lambda kind, detail, **_: published.append((kind, detail)))
    hour = 1_800_000_000 - 1_800_000_000 % 3600
    out = io.StringIO()
    with redirect_stdout(out):
        for i in range(6):  # 3 reaches the threshold; 4 to 6 are the same spike
            record_occurrence(_error("db timeout"), "GET /v1/x", correlation_id=f"c{i}", now=hour + i)
        record_occurrence(_error("another thing"), "GET /v1/x", now=hour + 7)
        for i in range(3):  # the next hour: a new spike
            record_occurrence(_error("db timeout"), "GET /v1/x", now=hour + 3600 + i)
    assert [k for k, _ in published] == ["ErrorAggregated", "ErrorAggregated"]
    detail = published[0][1]
    assert detail["message"] == "db timeout" and detail["count_this_hour"] == 3 and detail["threshold"] == 3
    spikes = [json.loads(line) for line in out.getvalue().splitlines() if '"ErrorSpike"' in line]
    assert len(spikes) == 2
    (directive,) = spikes[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Underlay" and directive["Dimensions"] == [["stage"]]
    assert spikes[0]["ErrorSpike"] == [1.0] or spikes[0]["ErrorSpike"] == 1.0


def test_a_job_failure_is_grouped_and_counted(env: dict[str, str]) -> None:
    from underlay import jobs

    job_id = jobs.enqueue("test.admin_boom", {"order": "o-1"})
    run_queue(env)
    from underlay.admin import errors

    (group,), _, _ = errors.list_groups()
    assert group["source"] == "job:test.admin_boom" and group["samples"] == [job_id]
    families = parse(admin("GET", "/v1/metrics", scopes="metrics:read"))
    jobs_total = {(s.labels["type"], s.labels["outcome"]): s.value for s in families["jobs"].samples}
    assert jobs_total == {("test.admin_boom", "retried"): 1}


def test_redis_down_never_fails_a_request_and_is_counted(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay.admin import recorder, stats

    from tests.conftest import free_port

    monkeypatch.setenv("UNDERLAY_REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    from underlay.redis_client import reset_redis
    from underlay.settings import reset_settings

    reset_settings()
    reset_redis()
    monkeypatch.setattr(stats, "collect", lambda **_: 1 / 0)
    before = recorder.dropped
    statuses = [admin("GET", "/v1/admin/stats")["statusCode"] for _ in range(4)]
    assert statuses == [500] * 4  # the handler's own error; the hook's failure added nothing
    assert recorder.dropped - before == 4
    assert admin("GET", "/v1/admin/errors")["statusCode"] == 503
    assert admin("GET", "/v1/metrics", scopes="metrics:read")["statusCode"] == 503
    reset_redis()


def test_an_invalid_configuration_adds_no_log_line_per_request_from_the_hooks(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The 503 CONFIG_INVALID names the bad fields where it is raised; the admin and Sentry hooks, which need the
    settings too, return quietly instead of logging a traceback on every request."""
    import logging

    from underlay.settings import reset_settings

    monkeypatch.setenv("UNDERLAY_ADMIN__METRICS_TTL_DAYS", "-5")
    monkeypatch.setenv("UNDERLAY_OBSERVABILITY__SENTRY_DSN", "https://k@o1.ingest.sentry.example/1")
    reset_settings()
    caplog.set_level(logging.INFO)
    for _ in range(3):
        response = admin("GET", "/v1/admin/errors")
        assert response["statusCode"] == 503 and body(response)["code"] == "CONFIG_INVALID"
    assert [r for r in caplog.records if r.getMessage() == "request"]  # the capture works
    noisy = [
        r.getMessage()
        for r in caplog.records
        if r.exc_info or "hook" in r.getMessage() or "sentry" in r.getMessage()
    ]
    assert noisy == []


# --- Prometheus -------------------------------------------------------------------------------------


def parse(response: dict[str, Any]) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    assert response["statusCode"] == 200, response["body"]
    assert response["headers"]["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f for f in text_string_to_metric_families(response["body"])}


def test_metrics_are_valid_exposition_format_with_red_per_route(env: dict[str, str]) -> None:
    from functions.health.app import handler

    for _ in range(3):
        handler(http_event("GET", "/v1/health/live"), None)
    handler(http_event("GET", "/v1/nowhere"), None)
    handler(http_event("GET", "/v1/health/details", scopes="jobs:read"), None)  # 403
    families = parse(admin("GET", "/v1/metrics", scopes="metrics:read"))
    assert {"http_requests", "http_request_duration_seconds", "cache_hits", "cache_misses", "jobs"} <= set(
        families
    )
    requests = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in families["http_requests"].samples
    }
    assert requests[("GET", "/v1/health/live", "200")] == 3
    assert requests[("GET", "$default", "404")] == 1
    assert requests[("GET", "/v1/health/details", "403")] == 1
    histogram = families["http_request_duration_seconds"]
    assert histogram.type == "histogram"
    live = [s for s in histogram.samples if s.labels.get("route") == "/v1/health/live"]
    buckets = [s for s in live if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == [
        "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf",
    ]  # fmt: skip
    values = [s.value for s in buckets]
    assert values == sorted(values) and values[-1] == 3
    (count,) = [s for s in live if s.name.endswith("_count")]
    (total,) = [s for s in live if s.name.endswith("_sum")]
    assert count.value == 3 and 0 < total.value < 3 * 5


def test_metrics_show_cache_hits_and_misses_by_type(env: dict[str, str]) -> None:
    from underlay.cache import get_cache, keys

    cache = get_cache()
    cache.set(keys.MOVIE_DETAIL.build(id=1), 1)
    for _ in range(3):
        cache.get(keys.MOVIE_DETAIL.build(id=1))
    cache.get(keys.MOVIE_DETAIL.build(id=2))
    cache.get("loose-key")
    cache.flush_stats()
    families = parse(admin("GET", "/v1/metrics", scopes="metrics:read"))
    hits = {s.labels["cache_type"]: s.value for s in families["cache_hits"].samples}
    misses = {s.labels["cache_type"]: s.value for s in families["cache_misses"].samples}
    assert hits == {"detail": 3} and misses["detail"] == 1 and sum(misses.values()) == 2


def _sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every command (or pipeline) sent to Redis from now on, one entry each."""
    from redis.connection import AbstractConnection

    sends: list[int] = []
    original = AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sends


def test_one_round_trip_per_request(
    env: dict[str, str], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook's writes for a request are one pipelined send to Redis (the live probe is not rate limited, so
    nothing else talks to Redis), and its TTL is refreshed now and then, not per request."""
    import redis as redis_py

    from functions.health.app import handler

    handler(http_event("GET", "/v1/health/live"), None)  # the connection and the TTL refresh
    stats = redis_py.Redis.from_url(redis_url)
    before = stats.info("commandstats")
    sends = _sends(monkeypatch)
    handler(http_event("GET", "/v1/health/live"), None)
    assert len(sends) == 1
    monkeypatch.undo()
    after = stats.info("commandstats")

    def calls(command: str, found: dict[str, Any]) -> int:
        return int(found.get(f"cmdstat_{command}", {}).get("calls", 0))

    assert calls("hincrby", after) - calls("hincrby", before) == 3
    assert calls("expire", after) == calls("expire", before)


def test_requests_are_batched_between_flushes(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a flush interval, an instance writes its counts at most that often: most requests cost no I/O, and
    no count is lost or counted twice."""
    from underlay.settings import reset_settings

    from functions.health.app import handler

    monkeypatch.setenv("UNDERLAY_ADMIN__METRICS_FLUSH_SECONDS", "60")
    reset_settings()
    handler(http_event("GET", "/v1/health/live"), None)  # an instance's first request writes at once
    sends = _sends(monkeypatch)
    for _ in range(20):
        handler(http_event("GET", "/v1/health/live"), None)
    assert sends == []
    monkeypatch.setenv("UNDERLAY_ADMIN__METRICS_FLUSH_SECONDS", "0")
    reset_settings()
    handler(http_event("GET", "/v1/health/live"), None)  # due: everything counted so far, in one send
    assert len(sends) == 1
    monkeypatch.undo()
    families = parse(admin("GET", "/v1/metrics", scopes="metrics:read"))
    (live,) = [s for s in families["http_requests"].samples if s.labels["route"] == "/v1/health/live"]
    assert live.value == 22


def test_an_error_is_written_at_once_with_the_counts(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay.admin import errors, stats
    from underlay.settings import reset_settings

    monkeypatch.setenv("UNDERLAY_ADMIN__METRICS_FLUSH_SECONDS", "60")
    reset_settings()
    admin("GET", "/v1/admin/errors")  # the first write
    monkeypatch.setattr(stats, "collect", lambda **_: [].pop())
    assert admin("GET", "/v1/admin/stats")["statusCode"] == 500
    (group,), _, _ = errors.list_groups()
    assert group["type"] == "IndexError" and group["count"] == 1
    monkeypatch.setenv("UNDERLAY_ADMIN__METRICS_FLUSH_SECONDS", "0")
    reset_settings()
    families = parse(admin("GET", "/v1/metrics", scopes="metrics:read"))
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["http_requests"].samples}
    assert requests[("/v1/admin/stats", "500")] == 1 and requests[("/v1/admin/errors", "200")] == 1


def _requests_in_child(redis_url: str, prefix: str, n: int) -> None:
    import os

    os.environ.update(
        {
            "UNDERLAY_REDIS__URL": redis_url,
            "UNDERLAY_REDIS__PREFIX": prefix,
            "POWERTOOLS_METRICS_DISABLED": "1",
        }
    )
    from functions.health.app import handler

    for _ in range(n):
        handler(http_event("GET", "/v1/health/live"), None)


def test_metrics_aggregate_across_instances(env: dict[str, str], redis_url: str) -> None:
    """Two processes (two Lambda instances) serve requests; one scrape of a third sees them all."""
    import os

    prefix = os.environ["UNDERLAY_REDIS__PREFIX"]
    spawn = multiprocessing.get_context("spawn")
    children = [spawn.Process(target=_requests_in_child, args=(redis_url, prefix, n)) for n in (4, 6)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    families = parse(admin("GET", "/v1/metrics", scopes="metrics:read"))
    (live,) = [
        s
        for s in families["http_requests"].samples
        if s.labels["route"] == "/v1/health/live" and s.labels["status"] == "200"
    ]
    assert live.value == 10


def test_metrics_switched_off_write_nothing_and_answer_404(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay.settings import reset_settings

    from functions.health.app import handler

    monkeypatch.setenv("UNDERLAY_ADMIN__METRICS_ENABLED", "false")
    reset_settings()
    handler(http_event("GET", "/v1/health/live"), None)
    assert not redis().keys(redis_key("metrics:*"))
    response = admin("GET", "/v1/metrics", scopes="metrics:read")
    assert response["statusCode"] == 404


def redis_key(pattern: str) -> str:
    from underlay.redis_client import key

    return key(pattern)
