"""The rate limiter without Redis: headers, subjects, keys, the paths that must not reach Redis, the deny cache
on an injected clock, fail modes on an injected breaker, the hook's routing, and its cold-start cost."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from underlay import declaration, ratelimit
from underlay.errors import DependencyUnavailableError, RateLimitedError, ValidationFailedError
from underlay.http import RequestIdentity, RequestInfo
from underlay.ratelimit import Decision, RateLimiter
from underlay.redis_client import CircuitBreaker
from underlay.settings import RateLimitSettings, RateTier

from tests.conftest import REPO


class ScriptedRedis:
    """Answers EVALSHA from scripted replies (the script's one integer: the new TAT - now when allowed,
    -(TAT - now) - 1 when denied, in µs), counting calls."""

    def __init__(self, *replies: int | Exception) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[Any, ...]] = []

    def register_script(self, script: str) -> Any:
        return type("Script", (), {"sha": "0" * 40})()

    def evalsha(self, sha: str, numkeys: int, *args: Any) -> int:
        self.calls.append(args)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name})")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _env(clean_env: pytest.MonkeyPatch) -> Iterator[None]:
    ratelimit.reset_ratelimit()
    yield
    ratelimit.reset_ratelimit()


def settings(**overrides: Any) -> RateLimitSettings:
    tiers = {"free": RateTier(limit=5, period_seconds=2), "enterprise": RateTier(limit=None)}
    return RateLimitSettings(**{"tiers": tiers, **overrides})


def make(
    client: Any, *, breaker: CircuitBreaker | None = None, clock: Clock | None = None, **cfg: Any
) -> RateLimiter:
    return RateLimiter(
        settings(**cfg), client=client, breaker=breaker or CircuitBreaker(3, 30), clock=clock or Clock()
    )


# --- headers ---------------------------------------------------------------------------------------


def test_headers_follow_the_structured_field_draft_and_round_up() -> None:
    decision = Decision(True, "free", 60, 60, remaining=59, reset_seconds=0.2)
    assert decision.headers() == {
        "RateLimit-Policy": '"free";q=60;w=60',
        "RateLimit": '"free";r=59;t=1',
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "59",
        "X-RateLimit-Reset": "1",
    }
    odd = Decision(False, 'we"ird\\', 5, 2, remaining=-1, reset_seconds=1.5).headers()
    assert odd["RateLimit"] == '"we_ird_";r=0;t=2'  # never an invalid sf-string, never a negative count


def test_no_headers_without_a_quota() -> None:
    assert Decision(True, "enterprise", None, 60).headers() == {}
    assert Decision(True, "free", 60, 60, degraded=True).headers() == {}


# --- subjects and keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "subject"),
    [
        ("alice", "alice"),
        ("ip:2001:db8::1", "ip:2001:db8::1"),
        ("auth0%7C12345", "auth0|12345"),
        ("a.b+c@example.com", "a.b+c@example.com"),
    ],
)
def test_subjects_are_percent_decoded(raw: str, subject: str) -> None:
    assert ratelimit.validate_subject(raw) == subject


@pytest.mark.parametrize("raw", ["", "x" * 201, "a b", "a%20b", "a/b", "a%2Fb", "ü", "*"])
def test_bad_subjects_are_422(raw: str) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        ratelimit.validate_subject(raw)
    assert caught.value.status == 422 and caught.value.errors[0].field == "subject"


def test_keys_are_short_readable_when_possible_and_hashed_when_not() -> None:
    limiter = RateLimiter(settings())
    assert limiter.key("ip:203.0.113.10", "health") == "underlay:rl:health:ip:203.0.113.10"
    long_a, long_b = "auth0|" + "a" * 150, "auth0|" + "a" * 149 + "b"
    assert len(limiter.key(long_a, "health")) <= 72
    assert limiter.key(long_a, "health") == limiter.key(long_a, "health")
    assert limiter.key(long_a, "health") != limiter.key(long_b, "health")
    assert limiter.key(long_a, "health") != limiter.key(long_a, "cache")


def test_groups_are_every_api_function_plus_configured_groups() -> None:
    groups = RateLimiter(settings(groups={"reports": {"free": RateTier(limit=1)}})).groups()
    assert set(groups) == {r.function for r in declaration.ROUTES} | {"reports"}


# --- paths that never reach Redis ------------------------------------------------------------------


def test_unlimited_disabled_and_impossible_costs_skip_redis() -> None:
    assert make(Untouchable()).check("e", "health", "enterprise").allowed
    assert make(Untouchable(), enabled=False).check("f", "health", "free").allowed
    impossible = make(Untouchable()).check("f", "health", "free", cost=6)
    assert not impossible.allowed and impossible.retry_after_seconds == 2


def test_an_unknown_tier_is_limited_as_free() -> None:
    client = ScriptedRedis(400_000, 1_200_000)
    decision = make(client).check("u", "health", "gold-plated")
    assert decision.policy == "free" and decision.limit == 5 and decision.remaining == 4
    assert client.calls[0][1:] == (400_000, 2_000_000)  # cost x interval, and the period, in µs
    weighted = make(client).check("u", "health", "free", cost=2)
    assert weighted.remaining == 2 and weighted.reset_seconds == 1.2
    assert client.calls[1][1:] == (800_000, 2_000_000)


# --- the deny cache --------------------------------------------------------------------------------


def test_the_deny_cache_answers_until_the_caller_could_pass_or_its_maximum() -> None:
    clock = Clock()
    client = ScriptedRedis(-1_900_001, 2_000_000)  # denied at TAT - now = 1.9 s: retry after 0.3 s
    limiter = make(client, clock=clock)
    assert not limiter.check("a", "health", "free").allowed
    clock.now += 0.25
    cached = limiter.check("a", "health", "free")
    assert not cached.allowed and cached.from_deny_cache
    assert cached.retry_after_seconds == pytest.approx(0.05)
    assert len(client.calls) == 1
    clock.now += 0.06  # the caller's unit is back: ask Redis, do not guess
    assert limiter.check("a", "health", "free").allowed
    assert len(client.calls) == 2


def test_the_deny_cache_is_bounded_by_its_maximum() -> None:
    clock = Clock()
    client = ScriptedRedis(-60_000_001, -59_400_001)  # 2 per minute, both spent: retry after 30 s
    slow = {"free": RateTier(limit=2, period_seconds=60)}
    limiter = make(client, clock=clock, deny_cache_max_seconds=0.5, tiers=slow)
    limiter.check("a", "health", "free")
    clock.now += 0.4
    assert limiter.check("a", "health", "free").from_deny_cache
    clock.now += 0.2
    assert not limiter.check("a", "health", "free").from_deny_cache
    assert len(client.calls) == 2


# --- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "allowed"), [("open", True), ("closed", False)])
def test_redis_errors_apply_the_fail_mode_and_open_the_breaker(mode: str, allowed: bool) -> None:
    breaker = CircuitBreaker(2, 30)
    client = ScriptedRedis(redis.ConnectionError("refused"), redis.TimeoutError("slow"))
    limiter = make(client, breaker=breaker, fail_mode=mode)
    decisions = [limiter.check("a", "health", "free") for _ in range(4)]
    assert all(d.degraded and d.allowed is allowed for d in decisions)
    assert len(client.calls) == 2 and breaker.state == "open"  # the last two skipped Redis


def test_unconfigured_redis_is_degraded_not_an_error() -> None:
    decision = RateLimiter(settings()).check("a", "health", "free")  # no UNDERLAY_REDIS__URL
    assert decision.allowed and decision.degraded


def test_reset_raises_503_when_redis_is_unavailable() -> None:
    breaker = CircuitBreaker(1, 30)
    breaker.failure()
    with pytest.raises(DependencyUnavailableError):
        make(Untouchable(), breaker=breaker).reset("alice")


# --- the hook --------------------------------------------------------------------------------------


def request(route_key: str, *, identity: dict[str, str] | None = None, ip: str = "192.0.2.1") -> RequestInfo:
    method, _, path = route_key.partition(" ")
    event = {"requestContext": {"http": {"method": method, "path": path, "sourceIp": ip}}}
    info = RequestInfo(event, method, path, declaration.route(route_key))
    if identity is not None:
        info.identity = RequestIdentity(identity)
    return info


def test_the_hook_keys_callers_by_sub_and_anonymous_callers_by_ip() -> None:
    client = ScriptedRedis(400_000, 400_000)
    ratelimit._limiter = make(client)
    headers: dict[str, str] = {}
    ratelimit.hook.before(req := request("GET /v1/health"))
    ratelimit.hook.after(req, 200, headers)
    ratelimit.hook.before(request("GET /v1/health/details", identity={"sub": "alice", "tier": "free"}))
    assert [c[0] for c in client.calls] == ["underlay:rl:health:ip:192.0.2.1", "underlay:rl:health:alice"]
    assert headers["X-RateLimit-Remaining"] == "4"


def test_the_hook_skips_exempt_and_unknown_routes() -> None:
    ratelimit._limiter = make(Untouchable())
    ratelimit.hook.before(request("GET /v1/health/live"))
    ratelimit.hook.before(RequestInfo({}, "GET", "/nope", None))


def test_the_hook_raises_429_with_headers_and_503_when_closed() -> None:
    ratelimit._limiter = make(ScriptedRedis(-2_000_001), deny_cache_max_seconds=0)
    with pytest.raises(RateLimitedError) as limited:
        ratelimit.hook.before(request("GET /v1/health"))
    assert limited.value.headers["Retry-After"] == "1" and limited.value.headers["RateLimit"].endswith(
        "r=0;t=2"
    )

    breaker = CircuitBreaker(1, 30)
    breaker.failure()
    ratelimit._limiter = make(Untouchable(), breaker=breaker, fail_mode="closed")
    with pytest.raises(DependencyUnavailableError):
        ratelimit.hook.before(request("GET /v1/health"))


def test_the_hook_adds_nothing_to_a_request_it_did_not_check() -> None:
    headers: dict[str, str] = {}
    ratelimit.hook.after(request("GET /v1/health"), 200, headers)
    assert headers == {}


# --- cold start ------------------------------------------------------------------------------------


def test_loading_the_hook_does_not_import_redis() -> None:
    program = "import sys, json, functions.health.app; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'redis')))"
    out = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
