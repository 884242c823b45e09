"""The rate limiter against a real redis-server: GCRA accuracy, timing, concurrency, tiers, headers through the
real handlers, the deny cache, fail modes and the admin reset."""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from underlay import ratelimit
from underlay.ratelimit import RateLimiter, limiter
from underlay.settings import RateLimitSettings, RateTier

from tests.conftest import free_port, load_event

FAST = '{"free": {"limit": 5, "period_seconds": 2}, "premium": {"limit": 20, "period_seconds": 2}, ' + (
    '"anonymous": {"limit": 3, "period_seconds": 60}, "enterprise": {"limit": null}}'
)


@pytest.fixture
def env(clean_env: pytest.MonkeyPatch, redis_url: str) -> Iterator[pytest.MonkeyPatch]:
    """The session's Redis under a fresh key prefix, short tiers, and no limiter state from other tests."""
    clean_env.setenv("UNDERLAY_REDIS__URL", redis_url)
    clean_env.setenv("UNDERLAY_REDIS__PREFIX", f"t{uuid.uuid4().hex[:6]}:")
    clean_env.setenv("UNDERLAY_RATELIMIT__TIERS", FAST)
    clean_env.setenv("UNDERLAY_HEALTH__CACHE_SECONDS", "0")
    ratelimit.reset_ratelimit()
    yield clean_env
    ratelimit.reset_ratelimit()


def burst(
    n: int, subject: str = "alice", group: str = "health", tier: str = "free", cost: int = 1
) -> list[bool]:
    return [limiter().check(subject, group, tier, cost).allowed for _ in range(n)]


def evalsha_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def http_event(
    route_key: str,
    path: str | None = None,
    *,
    sub: str | None = "alice",
    tier: str | None = None,
    scopes: str = "platform:read",
    ip: str = "203.0.113.10",
) -> dict[str, Any]:
    method, _, route_path = route_key.partition(" ")
    event = load_event("http/health_details")
    event["routeKey"] = event["requestContext"]["routeKey"] = route_key
    event["rawPath"] = event["requestContext"]["http"]["path"] = path or route_path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["sourceIp"] = ip
    if sub is None:
        event["headers"].pop("authorization")
    else:
        claims = {"sub": sub, "scopes": scopes}
        if tier:
            claims["tier"] = tier
        event["requestContext"]["authorizer"] = {"lambda": claims}
    return event


def health(route_key: str = "GET /v1/health/cache", **kwargs: Any) -> dict[str, Any]:
    from functions.health.app import handler

    return handler(http_event(route_key, **kwargs), None)


def anonymous(ip: str = "203.0.113.10") -> int:
    """A public request with no token; the status, or 429. (`/v1/health` reports unconfigured AWS resources
    however it likes: 200 or 503; only the limiter answers 429.)"""
    return int(health("GET /v1/health", sub=None, ip=ip)["statusCode"])


def admin_reset(subject: str, *, scopes: str = "platform:admin") -> dict[str, Any]:
    from functions.admin.app import handler

    event = http_event(
        "DELETE /v1/admin/rate-limits/{subject}",
        f"/v1/admin/rate-limits/{quote(subject, safe=':@|')}",
        sub="ops",
        scopes=scopes,
    )
    return handler(event, None)


# --- accuracy and timing ---------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_a_burst_admits_exactly_the_limit_then_denies() -> None:
    decisions = [limiter().check("alice", "health", "free") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    denied = decisions[5]
    assert denied.remaining == 0 and denied.limit == 5 and denied.period_seconds == 2
    # 5 per 2 s: one unit comes back every 0.4 s, the whole quota 2 s after the burst.
    assert 0.2 < denied.retry_after_seconds <= 0.4  # (less any time the burst itself took on a busy machine)
    assert 1.6 < denied.reset_seconds <= 2.0
    assert burst(1, "bob") == [True]  # another subject has its own quota


@pytest.mark.usefixtures("env")
def test_a_limit_that_does_not_divide_the_period_is_still_exact(env: pytest.MonkeyPatch) -> None:
    env.setenv("UNDERLAY_RATELIMIT__TIERS", '{"free": {"limit": 7, "period_seconds": 60}}')
    assert burst(8) == [True] * 7 + [False]


@pytest.mark.usefixtures("env")
def test_retry_after_is_the_wait_and_reset_is_a_full_quota() -> None:
    assert all(burst(5))
    denied = limiter().check("alice", "health", "free")
    assert not denied.allowed
    time.sleep(denied.retry_after_seconds + 0.02)
    assert burst(2) == [True, False]  # one unit came back, not two
    again = limiter().check("alice", "health", "free")
    time.sleep(again.reset_seconds + 0.02)
    assert burst(6) == [True] * 5 + [False]


def _hammer(url: str, prefix: str, start: Any, attempts: int, results: Any) -> None:
    import os

    os.environ["UNDERLAY_REDIS__PREFIX"] = prefix
    # A day's quota: the one unit a refill adds every ~5 minutes can never land inside the run, however slow
    # a loaded machine makes it, so "exactly the limit" holds without timing.
    cfg = RateLimitSettings(
        tiers={"free": RateTier(limit=300, period_seconds=86_400)}, deny_cache_max_seconds=0
    )
    client = redis.Redis.from_url(url)
    client.ping()
    mine = RateLimiter(cfg, client=client)
    mine.key("shared", "health")  # settings loaded before the start line
    results.put("ready")
    start.wait(30)
    results.put(sum(mine.check("shared", "health", "free").allowed for _ in range(attempts)))


def test_two_processes_never_exceed_the_limit_together(clean_env: pytest.MonkeyPatch, redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    prefix = f"mp{uuid.uuid4().hex[:6]}:"
    workers = [ctx.Process(target=_hammer, args=(redis_url, prefix, start, 600, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    assert [results.get(timeout=60) for _ in workers] == ["ready", "ready"]
    start.set()
    counts = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert sum(counts) == 300, counts  # 1200 attempts against a quota of 300: exactly the limit, across both
    assert all(c > 0 for c in counts), counts  # both really competed for the same key


# --- weights, tiers, subjects ----------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_weights_spend_several_units() -> None:
    assert burst(3, cost=2) == [True, True, False]  # 4 of 5 units spent; 6 would exceed
    assert burst(2, cost=1) == [True, False]  # the last unit is still there for a cheaper request
    assert not limiter().check("carol", "health", "free", cost=6).allowed  # more than the limit: never


@pytest.mark.usefixtures("env")
def test_tiers_premium_higher_enterprise_unlimited_unknown_is_free(redis_url: str) -> None:
    assert sum(burst(25, "p", tier="premium")) == 20
    assert sum(burst(25, "f", tier="free")) == 5
    assert sum(burst(25, "x", tier="platinum")) == 5
    assert limiter().check("x", "health", "platinum").policy == "free"
    before = evalsha_calls(redis_url)
    unlimited = [limiter().check("e", "health", "enterprise") for _ in range(100)]
    assert all(d.allowed and d.unlimited and d.headers() == {} for d in unlimited)
    assert evalsha_calls(redis_url) == before  # unlimited never costs a round trip


@pytest.mark.usefixtures("env")
def test_group_overrides_apply_per_route_group(env: pytest.MonkeyPatch) -> None:
    env.setenv("UNDERLAY_RATELIMIT__GROUPS", '{"cache": {"free": {"limit": 2, "period_seconds": 60}}}')
    assert burst(3, group="cache") == [True, True, False]
    assert sum(burst(6, group="health")) == 5  # its own key and the tier default


@pytest.mark.usefixtures("env")
def test_a_key_stays_within_128_bytes(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for subject in (
        "ip:203.0.113.10",
        str(uuid.uuid4()),
        "auth0|" + "x" * 190,
        "ip:2001:db8:85a3::8a2e:370:7334",
    ):
        assert limiter().check(subject, "health", "free").allowed
        key = limiter().key(subject, "health")
        assert client.exists(key), key
        used = client.memory_usage(key)
        assert used is not None and used <= 128, (subject, used)
        assert 0 < client.pttl(key) <= 2000  # expires once the quota is whole again


# --- through the real handlers ---------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_allowed_responses_carry_the_limit_headers() -> None:
    response = health()
    assert response["statusCode"] == 200
    headers = response["headers"]
    assert headers["RateLimit-Policy"] == '"free";q=5;w=2'
    assert headers["RateLimit"] == '"free";r=4;t=1'
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("5", "4")
    assert headers["X-RateLimit-Reset"] == "1"
    premium = health(sub="pat", tier="premium")["headers"]
    assert premium["RateLimit-Policy"] == '"premium";q=20;w=2'
    assert "RateLimit" not in health(sub="erin", tier="enterprise")["headers"]


@pytest.mark.usefixtures("env")
def test_the_sixth_request_is_a_429_problem_with_retry_after() -> None:
    statuses = [health()["statusCode"] for _ in range(5)]
    assert statuses == [200] * 5
    response = health()
    assert response["statusCode"] == 429
    headers = response["headers"]
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit"] == '"free";r=0;t=2'
    assert headers["X-RateLimit-Remaining"] == "0"
    body = json.loads(response["body"])
    assert body["status"] == 429 and body["code"] == "RATE_LIMITED"
    assert body["type"] == "urn:underlay:problem:rate-limited"
    assert body["correlation_id"] == headers["X-Correlation-ID"]
    assert "Traceback" not in response["body"]


@pytest.mark.usefixtures("env")
def test_anonymous_callers_are_keyed_by_ip_and_exempt_routes_are_free() -> None:
    assert [anonymous() == 429 for _ in range(4)] == [False, False, False, True]
    first = health("GET /v1/health", sub=None, ip="198.51.100.7")
    assert first["statusCode"] != 429
    assert first["headers"]["RateLimit-Policy"] == '"anonymous";q=3;w=60'
    live = [health("GET /v1/health/live", sub=None) for _ in range(10)]
    assert {r["statusCode"] for r in live} == {200}
    assert "RateLimit" not in live[0]["headers"]
    # A caller with a token is not limited by the address it shares with anonymous callers.
    assert health(sub="alice")["statusCode"] == 200


@pytest.mark.usefixtures("env")
def test_disabled_limits_nothing(env: pytest.MonkeyPatch) -> None:
    env.setenv("UNDERLAY_RATELIMIT__ENABLED", "false")
    responses = [health() for _ in range(10)]
    assert {r["statusCode"] for r in responses} == {200}
    assert "RateLimit" not in responses[0]["headers"]


@pytest.mark.usefixtures("env")
def test_violations_are_counted_by_tier_and_route_and_logged_when_sampled(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    env.setenv("UNDERLAY_RATELIMIT__VIOLATION_LOG_SAMPLE_RATE", "1")
    for _ in range(6):
        health()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    metrics = [line for line in lines if "RateLimitViolations" in line]
    assert len(metrics) == 1
    assert metrics[0]["tier"] == "free" and metrics[0]["route"] == "GET /v1/health/cache"
    logged = [r for r in caplog.records if r.getMessage() == "rate limited"]
    assert len(logged) == 1 and logged[0].subject == "alice"  # type: ignore[attr-defined]
    caplog.clear()

    env.setenv("UNDERLAY_RATELIMIT__VIOLATION_LOG_SAMPLE_RATE", "0")
    from infra.local.stack import _reset_process_caches

    _reset_process_caches()
    ratelimit.reset_ratelimit()
    health()
    assert "RateLimitViolations" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.getMessage() == "rate limited"]


# --- the deny cache --------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_the_deny_cache_refuses_without_redis(redis_url: str) -> None:
    assert all(burst(5))
    before = evalsha_calls(redis_url)
    decisions = [limiter().check("alice", "health", "free") for _ in range(50)]
    assert not any(d.allowed for d in decisions)
    assert evalsha_calls(redis_url) == before + 1  # the first refusal asked Redis; the other 49 did not
    assert all(d.from_deny_cache for d in decisions[1:])
    assert 0 < decisions[-1].retry_after_seconds <= decisions[0].retry_after_seconds
    # A cheaper request the cache cannot rule out still goes to Redis.
    assert all(burst(1, "dave", cost=4)) and not any(burst(1, "dave", cost=2))
    calls = evalsha_calls(redis_url)
    assert burst(1, "dave", cost=1) == [True] and evalsha_calls(redis_url) == calls + 1


@pytest.mark.usefixtures("env")
def test_without_the_deny_cache_every_refusal_asks_redis(env: pytest.MonkeyPatch, redis_url: str) -> None:
    env.setenv("UNDERLAY_RATELIMIT__DENY_CACHE_MAX_SECONDS", "0")
    assert all(burst(5))
    before = evalsha_calls(redis_url)
    assert not any(burst(20))
    assert evalsha_calls(redis_url) == before + 20


@pytest.mark.usefixtures("env")
def test_the_deny_cache_lasts_at_most_its_maximum(env: pytest.MonkeyPatch, redis_url: str) -> None:
    env.setenv("UNDERLAY_RATELIMIT__TIERS", '{"free": {"limit": 2, "period_seconds": 60}}')
    env.setenv("UNDERLAY_RATELIMIT__DENY_CACHE_MAX_SECONDS", "0.2")
    assert burst(3) == [True, True, False]  # retry after is 30 s, the cache trusts itself 0.2 s
    before = evalsha_calls(redis_url)
    assert not any(burst(5))
    time.sleep(0.25)
    assert not any(burst(1))
    assert evalsha_calls(redis_url) == before + 1


# --- fail modes ------------------------------------------------------------------------------------


@pytest.fixture
def dead_redis(env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    env.setenv("UNDERLAY_REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    env.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    # Only the limiter talks to Redis here (the admin metrics hook's failures would open the shared breaker sooner).
    env.setenv("UNDERLAY_ADMIN__METRICS_ENABLED", "false")
    return env


def test_fail_open_serves_and_counts(
    dead_redis: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    responses = [health() for _ in range(8)]  # past the breaker's 3 failures; Redis only warns health
    assert {r["statusCode"] for r in responses} == {200}
    assert all("RateLimit" not in r["headers"] for r in responses)
    out = capsys.readouterr().out
    assert out.count('"RateLimitDegraded"') >= 8  # one per request: in the EMF definition of each flush
    warnings = [r for r in caplog.records if r.getMessage() == "rate limiter cannot reach redis"]
    assert len(warnings) == 3  # until the breaker opens; then the breaker's one warning, not one per request
    assert any(r.getMessage() == "redis unavailable; serving without it" for r in caplog.records)


def test_fail_closed_answers_503_problem(dead_redis: pytest.MonkeyPatch) -> None:
    dead_redis.setenv("UNDERLAY_RATELIMIT__FAIL_MODE", "closed")
    responses = [health() for _ in range(5)]
    assert {r["statusCode"] for r in responses} == {503}
    body = json.loads(responses[-1]["body"])
    assert body["code"] == "DEPENDENCY_UNAVAILABLE" and body["status"] == 503
    assert responses[-1]["headers"]["Content-Type"] == "application/problem+json"
    assert int(responses[-1]["headers"]["Retry-After"]) >= 1
    assert "Traceback" not in responses[-1]["body"]


def test_a_redis_that_stops_mid_flight_fails_open(env: pytest.MonkeyPatch) -> None:
    from infra.local.stack import RedisProcess

    server = RedisProcess()
    try:
        env.setenv("UNDERLAY_REDIS__URL", server.start())
        first = health()
        assert first["statusCode"] == 200 and first["headers"]["X-RateLimit-Remaining"] == "4"
        server.stop()
        after = [health() for _ in range(6)]  # more than the limit: nobody is counting now
        assert {r["statusCode"] for r in after} == {200}
        assert "X-RateLimit-Remaining" not in after[-1]["headers"]
    finally:
        server.stop()


# --- the admin reset -------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_admin_reset_needs_platform_admin() -> None:
    response = admin_reset("alice", scopes="platform:read")
    assert response["statusCode"] == 403
    assert json.loads(response["body"])["code"] == "INSUFFICIENT_SCOPE"


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("subject", ["has space", "x" * 201, "semi;colon", "tab\tin"])
def test_admin_reset_rejects_a_bad_subject(subject: str) -> None:
    response = admin_reset(subject)
    assert response["statusCode"] == 422, response["body"]
    body = json.loads(response["body"])
    assert body["code"] == "VALIDATION_FAILED" and body["errors"][0]["field"] == "subject"


@pytest.mark.usefixtures("env")
def test_admin_reset_lets_a_limited_caller_back_in(redis_url: str) -> None:
    ip = "ip:203.0.113.10"
    assert [anonymous() == 429 for _ in range(4)] == [False, False, False, True]
    assert all(burst(3, ip, group="cache", tier="anonymous"))
    response = admin_reset(ip)
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert body["subject"] == ip and body["keys_deleted"] == 2
    assert {"health", "admin", "cache"} <= set(body["groups_reset"])
    # Allowed again, in both groups; the deny cache of this instance was cleared too.
    assert anonymous() != 429
    assert limiter().check(ip, "cache", "anonymous").remaining == 2


@pytest.mark.usefixtures("env")
def test_admin_reset_decodes_the_subject_and_reports_nothing_to_delete() -> None:
    assert all(burst(5, "auth0|abc"))
    response = admin_reset("auth0|abc")  # sent raw here, percent-encoded below
    assert json.loads(response["body"])["keys_deleted"] == 1
    from functions.admin.app import handler

    event = http_event(
        "DELETE /v1/admin/rate-limits/{subject}",
        "/v1/admin/rate-limits/auth0%7Cabc",
        sub="ops",
        scopes="platform:admin",
    )
    again = handler(event, None)
    assert again["statusCode"] == 200
    assert json.loads(again["body"]) == {
        "subject": "auth0|abc",
        "groups_reset": list(limiter().groups()),
        "keys_deleted": 0,
    }


def test_admin_reset_answers_503_when_redis_is_down(dead_redis: pytest.MonkeyPatch) -> None:
    response = admin_reset("alice")
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["code"] == "DEPENDENCY_UNAVAILABLE"
