"""The Redis connection: created on first use, reused across invocations, with Lambda-tight timeouts.

Locally `UNDERLAY_REDIS__URL` points at a redis-server (or the dev stack's). On AWS the client connects to the
ElastiCache endpoint over TLS, with the auth token read once from Secrets Manager.

`breaker()` is the one circuit breaker in front of Redis, shared by the cache and the rate limiter: after
`cache.breaker_failures` consecutive errors it opens for `cache.breaker_cooldown_seconds`, during which callers
skip Redis entirely (the cache computes, the limiter applies its fail mode); then one probe call is let through.
Opening logs a warning, counts `RedisCircuitOpened` and emits `CacheFallbackActivated`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from underlay.settings import get_settings

if TYPE_CHECKING:
    import redis

T = TypeVar("T")
_lock = threading.Lock()
_client: redis.Redis | None = None


def _auth_token(secret_arn: str) -> str:
    from underlay.config.secrets import fetch

    return fetch(secret_arn)  # CDK's generated secret is JSON ({"token": ...}); a plain string works too


def get_redis() -> redis.Redis:
    """The process-wide client. Raises `RuntimeError` when Redis is not configured."""
    global _client
    if _client is not None:
        return _client
    with _lock:
        if _client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            cfg = get_settings().redis
            common = {
                "socket_timeout": cfg.socket_timeout_seconds,
                "socket_connect_timeout": cfg.connect_timeout_seconds,
                "health_check_interval": 30,
                "retry_on_timeout": False,
                # redis-py 6+ retries 3 times with up to 10 s backoff by default: seconds of a Lambda's budget
                # per call while Redis is down. No retries here; the circuit breaker decides when to try again.
                "retry": Retry(NoBackoff(), 0),
            }
            if cfg.url is not None:
                _client = redis.Redis.from_url(cfg.url.get_secret_value(), **common)  # type: ignore[arg-type]
            elif cfg.host:
                password = _auth_token(cfg.auth_secret_arn) if cfg.auth_secret_arn else None
                _client = redis.Redis(
                    host=cfg.host,
                    port=cfg.port,
                    ssl=cfg.tls,
                    password=password,
                    **common,  # type: ignore[arg-type]
                )
            else:
                raise RuntimeError(
                    "Redis is not configured (set UNDERLAY_REDIS__URL or UNDERLAY_REDIS__HOST)"
                )
        return _client


def reset_redis() -> None:
    """Drop the client and the breaker (tests, and the local stack between runs)."""
    global _client, _breaker
    with _lock:
        if _client is not None:
            _client.close()
        _client = None
        _breaker = None


def errors() -> tuple[type[BaseException], ...]:
    """What a Redis call raises when Redis is down or failing (not a programming error): catch these, count them
    on the breaker, and fall back."""
    import redis

    return (redis.RedisError, OSError)


def guarded(call: Callable[[], T], *, unavailable: str = "Redis is unavailable; try again shortly.") -> T:
    """Run a Redis call an API answer needs, through the shared breaker: Redis down, failing or not configured is
    `DependencyUnavailableError` (503 problem+json), and the breaker learns of it."""
    from underlay.errors import DependencyUnavailableError
    from underlay.settings import get_settings

    if not get_settings().redis.configured:
        raise DependencyUnavailableError("Redis is not configured for this function.")
    shared = breaker()
    if not shared.allow():
        raise DependencyUnavailableError(f"{unavailable} (circuit open)")
    try:
        result = call()
    except Exception as error:
        if not isinstance(error, errors()):
            raise
        shared.failure(error)
        raise DependencyUnavailableError(unavailable) from error
    shared.success()
    return result


def key(*parts: str) -> str:
    """A namespaced key: every key starts with the configured prefix."""
    return get_settings().redis.prefix + ":".join(parts)


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure breaker. Thread-safe; `clock` is injectable for tests."""

    def __init__(
        self,
        failures: int,
        cooldown_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[int, str], None] | None = None,
    ) -> None:
        self.failures_to_open = failures
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._on_open = on_open
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self._probe_started = 0.0
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_seconds:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May the caller use Redis now? In half-open state exactly one caller (the probe) is let through."""
        if self._opened_at is None:
            return True
        with self._lock:
            if self.state != "half_open":
                return False
            now = self._clock()
            # One probe at a time; a probe whose caller never reported back (it raised something that is not a
            # Redis error) stops blocking the next one after a cool-down, so the breaker cannot stick half-open.
            if self._probing and now - self._probe_started < self.cooldown_seconds:
                return False
            self._probing, self._probe_started = True, now
            return True

    def success(self) -> None:
        if self._opened_at is None and self._consecutive == 0:
            return
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._probing = False

    def failure(self, error: BaseException | None = None) -> None:
        opened = False
        with self._lock:
            self._consecutive += 1
            if self._probing or (self._opened_at is None and self._consecutive >= self.failures_to_open):
                opened = self._opened_at is None
                self._opened_at = self._clock()
                self._probing = False
                self.times_opened += int(opened)
        if opened and self._on_open is not None:
            self._on_open(self._consecutive, type(error).__name__ if error else "")


def _breaker_opened(failures: int, error: str) -> None:
    from aws_lambda_powertools.metrics import MetricUnit
    from underlay import events
    from underlay.observability import get_logger, get_metrics

    cooldown = get_settings().cache.breaker_cooldown_seconds
    get_logger().warning(
        "redis unavailable; serving without it",
        extra={"failures": failures, "error": error, "cooldown_s": cooldown},
    )
    get_metrics().add_metric(name="RedisCircuitOpened", unit=MetricUnit.Count, value=1)
    events.publish(
        "CacheFallbackActivated",
        {"reason": error or "redis errors", "failures": failures, "cooldown_s": cooldown},
    )


_breaker: CircuitBreaker | None = None


def breaker() -> CircuitBreaker:
    """The process-wide breaker in front of Redis (configured from `cache.breaker_*`)."""
    global _breaker
    if _breaker is None:
        with _lock:
            if _breaker is None:
                cfg = get_settings().cache
                _breaker = CircuitBreaker(
                    cfg.breaker_failures, cfg.breaker_cooldown_seconds, on_open=_breaker_opened
                )
    return _breaker
