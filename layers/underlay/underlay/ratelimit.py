"""Rate limiting: GCRA in one Lua script, per caller, per plan tier and per route group (issue 3).

    from underlay.ratelimit import limiter
    decision = limiter().check("alice", "flags", "premium", cost=1)
    if not decision.allowed: ...            # decision.retry_after_seconds, decision.headers()

The algorithm is GCRA (the generic cell rate algorithm, as in redis-cell and `throttled`): each (route group,
subject) has one Redis string holding its theoretical arrival time (TAT) in microseconds, with a PX expiry at
the moment the caller is fully replenished. A check is one EVALSHA round trip that reads Redis `TIME` (so every
instance shares one clock), GETs the TAT and, only when the request is allowed, SETs the new one. A tier of
`limit` per `period_seconds` admits a burst of exactly `limit` units, then one unit every `period/limit`.
A request costs `ratelimit.costs[route]` units (default 1). Denied requests do not change the stored state.

Around that:
- a deny cache: a caller Redis just refused is refused in process, without Redis, while its TAT (tracked on
  this instance's monotonic clock) still says no, for at most `deny_cache_max_seconds`;
- the shared Redis circuit breaker (`redis_client.breaker()`): while it is open Redis is skipped, and the fail
  mode applies: `open` (default) allows the request and counts `RateLimitDegraded`; `closed` refuses it
  (the hook answers 503 DEPENDENCY_UNAVAILABLE). Redis trouble never becomes a 500;
- `RateLimitHook` (listed in `http.REQUEST_HOOKS`): limits every declared, non-exempt route of every API
  function. Callers with a token are keyed by `sub` and their `tier`; anonymous callers by `ip:<sourceIp>` in
  tier `anonymous`. Responses carry `RateLimit-Policy`/`RateLimit` (draft-ietf-httpapi-ratelimit-headers,
  structured fields) and `X-RateLimit-Limit/-Remaining/-Reset`; the unlimited tier and fail-open responses carry
  none, since there is no quota to describe. Violations count `RateLimitViolations` by tier and route
  (both bounded: configured tiers, declared routes) and are logged at `violation_log_sample_rate`.

Keys are `<prefix>rl:<group>:<subject>`; a subject that would make the key longer than 72 characters is
replaced by a hash of it, so a key stays within 128 bytes of Redis memory.

Nothing here imports redis at module level: the hook is imported on every cold start.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from underlay import redis_client
from underlay.errors import DependencyUnavailableError, FieldError, RateLimitedError, ValidationFailedError

if TYPE_CHECKING:
    import redis
    from underlay.http import RequestInfo
    from underlay.redis_client import CircuitBreaker
    from underlay.settings import RateLimitSettings

# KEYS[1] the subject's key; ARGV[1] the request's increment (cost x emission interval, µs); ARGV[2] the period
# (µs: the burst tolerance). One integer back, so the reply is as cheap to parse as a GET's: allowed, the new
# TAT - now (> 0); denied, -(TAT - now) - 1 (< 0). Remaining, reset and retry follow from it in Python. Integers
# only: Lua's tostring would print the 16-digit microsecond clock as 1.7e+15, hence string.format('%d').
GCRA_LUA = """
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + ARGV[1]
if new_tat - now > tonumber(ARGV[2]) then return now - tat - 1 end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return new_tat - now
"""

SUBJECT_MAX_LENGTH = 200
# Token subjects (UUIDs, `auth0|123`, e-mail addresses) and `ip:<v4 or v6>`.
SUBJECT_PATTERN = r"^[A-Za-z0-9._~:@|+=-]+$"
_SUBJECT = re.compile(SUBJECT_PATTERN)
_POLICY_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_KEY_CHARS = 72  # <= 72 characters keeps MEMORY USAGE of a key at 120 bytes on Redis 7 (jemalloc)
_DENY_CACHE_MAX_ENTRIES = 10_000


class Decision(NamedTuple):
    """The answer for one check. Seconds are floats; headers round them up. (A NamedTuple: it is built on
    every request, and a frozen dataclass costs several times as much to construct.)"""

    allowed: bool
    policy: str  # the effective tier name (an unknown tier is `free`)
    limit: int | None  # None: unlimited
    period_seconds: int
    remaining: int = 0
    reset_seconds: float = 0.0  # until the full quota is back
    retry_after_seconds: float = 0.0  # until this request would be allowed; 0 when allowed
    degraded: bool = False  # Redis was not consulted and the fail mode decided
    from_deny_cache: bool = False

    @property
    def unlimited(self) -> bool:
        return self.limit is None

    def headers(self) -> dict[str, str]:
        """The rate-limit response headers; none for the unlimited tier or a degraded (no Redis) decision."""
        if self.limit is None or self.degraded:
            return {}
        name = _POLICY_NAME.sub("_", self.policy) or "default"
        remaining = max(0, self.remaining)
        reset = max(0, math.ceil(self.reset_seconds))
        return {
            "RateLimit-Policy": f'"{name}";q={self.limit};w={self.period_seconds}',
            "RateLimit": f'"{name}";r={remaining};t={reset}',
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }


@dataclass(frozen=True, slots=True)
class ResetResult:
    subject: str
    groups_reset: tuple[str, ...]
    keys_deleted: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "groups_reset": list(self.groups_reset),
            "keys_deleted": self.keys_deleted,
        }


class _Plan(NamedTuple):
    policy: str
    limit: int | None
    period_seconds: int
    period_us: int
    interval_us: int


@dataclass(slots=True)
class _Denied:
    """What this instance knows about a refused caller, on its own monotonic clock."""

    tat: float  # the caller's theoretical arrival time
    interval: float  # seconds per unit
    period: float
    limit: int
    policy: str
    period_seconds: int
    expires: float  # the entry is trusted until then (deny_cache_max_seconds)


class RateLimiter:
    """GCRA limiter over Redis. Every argument is optional: by default it reads `get_settings().ratelimit`
    on each check (so a settings reset applies), the process-wide client and the shared breaker."""

    def __init__(
        self,
        settings: RateLimitSettings | None = None,
        *,
        client: redis.Redis | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._client = client
        self._breaker = breaker
        self._clock = clock
        self._deny: dict[tuple[str, str], _Denied] = {}
        self._lock = threading.Lock()
        self._sha: str | None = None
        self._warned_unconfigured = False
        # Derived from the settings in force; dropped when they are reloaded (`_refresh`).
        self._root: object = None
        self._plans: dict[tuple[str, str], _Plan] = {}
        self._keys: dict[tuple[str, str], str] = {}

    # --- configuration and dependencies ---------------------------------------------------------

    @property
    def settings(self) -> RateLimitSettings:
        from underlay.settings import get_settings

        root = get_settings()
        if root is not self._root:  # reloaded: the prefix or the tiers may have changed
            self._root, self._plans, self._keys = root, {}, {}
        return self._settings if self._settings is not None else root.ratelimit

    def _redis(self) -> redis.Redis:
        if self._client is not None:
            return self._client
        from underlay.redis_client import get_redis

        return get_redis()

    def _get_breaker(self) -> CircuitBreaker:
        if self._breaker is not None:
            return self._breaker
        from underlay.redis_client import breaker

        return breaker()

    def key(self, subject: str, group: str) -> str:
        """The Redis key of a subject in a route group (short: see the module docstring)."""
        found = self._keys.get((group, subject))
        if found is not None and self._root is not None:
            return found
        from underlay.redis_client import key

        full = key("rl", group, subject)
        if len(full) > _MAX_KEY_CHARS:
            digest = hashlib.blake2b(subject.encode(), digest_size=15).digest()
            full = key("rl", group, "#" + base64.urlsafe_b64encode(digest).decode())
        if len(self._keys) >= _DENY_CACHE_MAX_ENTRIES:
            self._keys.clear()
        self._keys[(group, subject)] = full
        return full

    def _plan(self, cfg: RateLimitSettings, group: str, tier: str) -> _Plan:
        plan = self._plans.get((group, tier))
        if plan is None:
            policy = tier if tier in cfg.tiers or tier in cfg.groups.get(group, {}) else "free"
            rate = cfg.tier(group, policy)
            limit = rate.limit if cfg.enabled else None
            period_us = rate.period_seconds * 1_000_000
            # Integer microseconds keep the script exact; flooring the interval admits exactly `limit` a burst.
            interval_us = max(1, period_us // limit) if limit else 0
            plan = _Plan(policy, limit, rate.period_seconds, period_us, interval_us)
            if len(self._plans) >= 1000:  # tiers come from tokens: keep a flood of odd ones bounded
                self._plans.clear()
            self._plans[(group, tier)] = plan
        return plan

    def groups(self) -> tuple[str, ...]:
        """Every route group: the declared API functions, plus groups that only exist in `groups` config."""
        from underlay import declaration

        return tuple(sorted({r.function for r in declaration.ROUTES} | set(self.settings.groups)))

    # --- the check ------------------------------------------------------------------------------

    def check(self, subject: str, group: str, tier: str, cost: int = 1) -> Decision:
        """May `subject` spend `cost` units in `group` now? Never raises for Redis trouble."""
        policy, limit, period_s, period_us, interval_us = self._plan(self.settings, group, tier)
        if limit is None:
            return Decision(True, policy, None, period_s)
        if cost > limit:  # can never be allowed; do not pretend a wait would help
            return Decision(False, policy, limit, period_s, 0, 0.0, float(period_s))

        now = self._clock()
        cached = self._deny.get((group, subject))
        if cached is not None:
            if now < cached.expires and cached.limit == limit and cached.period_seconds == period_s:
                retry = cached.tat + cost * cached.interval - cached.period - now
                if retry > 0:
                    remaining = int((cached.period - (cached.tat - now)) // cached.interval)
                    return Decision(
                        False, policy, limit, period_s, remaining, cached.tat - now, retry, False, True
                    )
            else:
                self._deny.pop((group, subject), None)

        breaker = self._get_breaker()
        if not breaker.allow():
            return self._degraded(policy, limit, period_s, None)
        increment = cost * interval_us
        try:
            client = self._redis()
            reply = int(self._evalsha(client, self.key(subject, group), increment, period_us))
        except RuntimeError as exc:  # Redis is not configured for this function
            return self._degraded(policy, limit, period_s, exc)
        except Exception as exc:
            if not isinstance(exc, redis_client.errors()):
                raise
            breaker.failure(exc)
            return self._degraded(policy, limit, period_s, exc)
        breaker.success()
        if reply > 0:  # allowed: the reply is the new TAT - now
            return Decision(True, policy, limit, period_s, (period_us - reply) // interval_us, reply / 1e6)
        tat = -reply - 1  # denied: the stored TAT - now, unchanged
        decision = Decision(
            False,
            policy,
            limit,
            period_s,
            (period_us - tat) // interval_us,
            tat / 1e6,
            (tat + increment - period_us) / 1e6,
        )
        self._remember_denied(subject, group, decision, interval_us / 1e6, now)
        return decision

    def _evalsha(self, client: redis.Redis, key: str, increment: int, period_us: int) -> Any:
        if self._sha is None:
            self._sha = client.register_script(GCRA_LUA).sha
        try:
            return client.evalsha(self._sha, 1, key, increment, period_us)
        except Exception as exc:
            import redis

            if not isinstance(exc, redis.exceptions.NoScriptError):
                raise
            # A restarted or failed-over server lost its script cache: load it and retry once.
            script = client.register_script(GCRA_LUA)
            return script(keys=[key], args=[increment, period_us], client=client)

    def _remember_denied(
        self, subject: str, group: str, decision: Decision, interval: float, now: float
    ) -> None:
        ttl = min(decision.retry_after_seconds, self.settings.deny_cache_max_seconds)
        if ttl <= 0:
            return
        if len(self._deny) >= _DENY_CACHE_MAX_ENTRIES:
            with self._lock:
                for stale in [k for k, v in self._deny.items() if v.expires <= now]:
                    self._deny.pop(stale, None)
                if len(self._deny) >= _DENY_CACHE_MAX_ENTRIES:
                    return  # a flood of distinct callers: Redis keeps answering them
        self._deny[(group, subject)] = _Denied(
            tat=now + decision.reset_seconds,
            interval=interval,
            period=float(decision.period_seconds),
            limit=decision.limit or 0,
            policy=decision.policy,
            period_seconds=decision.period_seconds,
            expires=now + ttl,
        )

    def _degraded(self, policy: str, limit: int, period_s: int, error: BaseException | None) -> Decision:
        from aws_lambda_powertools.metrics import MetricUnit
        from underlay.observability import get_logger, get_metrics

        fail_open = self.settings.fail_mode == "open"
        get_metrics().add_metric(name="RateLimitDegraded", unit=MetricUnit.Count, value=1)
        if isinstance(error, RuntimeError):  # not configured: say so once, not on every request
            error, self._warned_unconfigured = (None if self._warned_unconfigured else error), True
        if error is not None:  # while the breaker is open it has logged already; stay quiet per request
            get_logger().warning(
                "rate limiter cannot reach redis",
                extra={"error": type(error).__name__, "fail_mode": self.settings.fail_mode},
            )
        return Decision(fail_open, policy, limit, period_s, degraded=True)

    # --- admin ----------------------------------------------------------------------------------

    def reset(self, subject: str) -> ResetResult:
        """Forget `subject` in every route group: one DEL of O(groups) keys, never a keyspace scan.

        Raises `DependencyUnavailableError` when Redis cannot be reached (the reset did not happen)."""
        groups = self.groups()
        for group in groups:
            self._deny.pop((group, subject), None)
        breaker = self._get_breaker()
        if not breaker.allow():
            raise DependencyUnavailableError("Redis is unavailable; the rate limits were not reset.")
        try:
            deleted = int(self._redis().delete(*(self.key(subject, g) for g in groups)))
        except RuntimeError as exc:
            raise DependencyUnavailableError("Redis is not configured for this function.") from exc
        except Exception as exc:
            if not isinstance(exc, redis_client.errors()):
                raise
            breaker.failure(exc)
            raise DependencyUnavailableError("Redis is unavailable; the rate limits were not reset.") from exc
        breaker.success()
        return ResetResult(subject, groups, deleted)

    def forget_denials(self) -> None:
        self._deny.clear()


_limiter: RateLimiter | None = None


def limiter() -> RateLimiter:
    """The process-wide limiter (settings, client and breaker read on use)."""
    global _limiter
    if _limiter is None:
        _limiter = RateLimiter()
    return _limiter


def reset_ratelimit() -> None:
    """Drop the process-wide limiter, its deny cache and its script handle (tests, the local stack)."""
    global _limiter
    _limiter = None


def validate_subject(subject: str) -> str:
    """A subject from a URL path: percent-decoded, then checked. Raises `ValidationFailedError` (422)."""
    from urllib.parse import unquote

    decoded = unquote(subject)
    if not 1 <= len(decoded) <= SUBJECT_MAX_LENGTH or not _SUBJECT.match(decoded):
        raise ValidationFailedError(
            "The subject is not valid.",
            errors=[
                FieldError(
                    "subject",
                    f"1 to {SUBJECT_MAX_LENGTH} characters of letters, digits and ._~:@|+=- "
                    "(a token subject, or ip:<address>)",
                )
            ],
        )
    return decoded


def reset_subject(subject: str) -> ResetResult:
    """The admin reset: validate, reset in every group, clear this instance's deny cache, audit."""
    import importlib

    subject = validate_subject(subject)
    result = limiter().reset(subject)
    try:
        audit = importlib.import_module("underlay.audit")
    except ModuleNotFoundError as exc:  # the audit module lands with its issue; nothing to record into yet
        if exc.name != "underlay.audit":
            raise
    else:
        audit.record("ratelimit.reset", "rate_limit_subject", subject, after=result.as_dict())
    return result


# --- the request hook ---------------------------------------------------------------------------


class RateLimitHook:
    """Limits every declared, non-exempt route of every API function (see `http.REQUEST_HOOKS`)."""

    def __init__(self) -> None:
        import contextvars

        self._current: contextvars.ContextVar[tuple[RequestInfo, Decision] | None] = contextvars.ContextVar(
            "underlay_ratelimit_decision", default=None
        )

    def before(self, request: RequestInfo) -> None:
        from underlay.settings import get_settings

        self._current.set(None)
        cfg = get_settings().ratelimit
        route = request.route
        if not cfg.enabled or route is None or route.key in cfg.exempt_routes:
            return
        if request.identity is not None:
            subject, tier = request.identity.sub, request.identity.tier
        else:
            http = (request.event.get("requestContext") or {}).get("http") or {}
            subject, tier = f"ip:{http.get('sourceIp') or 'unknown'}", "anonymous"
        decision = limiter().check(subject, route.function, tier, cfg.costs.get(route.key, 1))
        self._current.set((request, decision))
        if decision.allowed:
            return
        if decision.degraded:
            from underlay.redis_client import breaker

            retry = max(1, math.ceil(breaker().cooldown_seconds))
            raise DependencyUnavailableError(
                "Rate limiting is unavailable, and this service refuses requests it cannot count.",
                headers={"Retry-After": str(retry)},
            )
        self._violation(request, subject, decision, cfg.violation_log_sample_rate)
        error = RateLimitedError(
            math.ceil(decision.retry_after_seconds),
            f"Rate limit of {decision.limit} per {decision.period_seconds} s exceeded "
            f"(tier {decision.policy}); retry after the Retry-After header's seconds.",
        )
        error.headers.update(decision.headers())
        raise error

    def after(self, request: RequestInfo, status: int, headers: dict[str, str]) -> None:
        current = self._current.get()
        if current is None or current[0] is not request:
            return
        headers.update(current[1].headers())
        self._current.set(None)

    @staticmethod
    def _violation(request: RequestInfo, subject: str, decision: Decision, sample_rate: float) -> None:
        import random

        from underlay.admin.metrics import count_violation
        from underlay.observability import emit_metric, get_logger

        count_violation(request.route_key, decision.policy)  # the 24 h figure and the Prometheus counter
        emit_metric("RateLimitViolations", tier=decision.policy, route=request.route_key)
        if random.random() < sample_rate:  # noqa: S311 - sampling, not security
            get_logger().info(
                "rate limited",
                extra={
                    "subject": subject,
                    "tier": decision.policy,
                    "route": request.route_key,
                    "retry_after_s": round(decision.retry_after_seconds, 3),
                    "sample_rate": sample_rate,
                },
            )


hook = RateLimitHook()
