"""Circuit breakers for calls to external services, their state shared by every instance through Redis.

    from underlay.breaker import external_breaker, get_breaker

    with external_breaker("payments") as call:    # raises CircuitOpenError (503) while the circuit is open
        response = post(...)                      # an exception raised here counts as a failure
        if response.status >= 500:
            call.failed()                         # so does a failure that is not an exception

    get_breaker("payments").call(fetch, order_id)

By default 5 failures in a row, counted across all instances, open the circuit for 30 s (`breakers.failures`,
`breakers.open_seconds`, per service in `breakers.services`). While it is open every caller fails fast with
`CircuitOpenError` (503 `DEPENDENCY_UNAVAILABLE`, `Retry-After`). After the open period exactly one caller, on any
instance, is let through as the probe: its success closes the circuit, its failure opens it again. A success
resets the count; a count that sees no new failure for `breakers.failure_window_seconds` is forgotten.

The state is one Redis hash per service (`<prefix>breaker:<name>`), read and changed only by Lua scripts, so
each decision is one atomic round trip; a closed circuit with no failures costs one `EVALSHA` per call. When
Redis is not configured, or down (`underlay.redis_client.breaker()` is open, or a call fails), each instance
falls back to an in-process breaker with the same policy, the `CircuitBreaker` that guards Redis itself.

Health's external checks (`underlay.health`) go through the breaker of the same name, so an app's calls and the
health probe of a service share one circuit. What counts as a failure: any exception except an `UnderlayError`
below 500 (the caller's own 4xx are not the dependency's fault), or `call.failed()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from underlay.errors import CircuitOpenError, UnderlayError
from underlay.redis_client import BreakerState, CircuitBreaker

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

T = TypeVar("T")

# KEYS[1] the hash; ARGV now_ms, probe_ms. Returns {verdict, failures, wait_ms}:
# verdict 1 = closed (go), 2 = half open and this caller is the probe (go), 0 = open (refuse).
_ALLOW = """
local s = redis.call('HMGET', KEYS[1], 'f', 'o', 'p')
local failures, open_until, probe_until = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0
local now = tonumber(ARGV[1])
if open_until == 0 then return {1, failures, 0} end
if now < open_until then return {0, failures, open_until - now} end
if now < probe_until then return {0, failures, probe_until - now} end
redis.call('HSET', KEYS[1], 'p', now + tonumber(ARGV[2]))
return {2, failures, 0}
"""
# ARGV now_ms, failures_to_open, open_ms, window_ms. Returns {opened, failures}: opened 1 = this failure opened
# the circuit, 2 = it re-opened it from half open (a failed probe), 0 = no change.
_FAILURE = """
local now, open_ms, window_ms = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
local failures = redis.call('HINCRBY', KEYS[1], 'f', 1)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'o')) or 0
local opened = 0
if open_until == 0 and failures >= tonumber(ARGV[2]) then
  opened = 1
elseif open_until ~= 0 and now >= open_until then
  opened = 2
end
if opened > 0 then
  open_until = now + open_ms
  redis.call('HSET', KEYS[1], 'o', open_until, 'p', 0)
end
redis.call('PEXPIRE', KEYS[1], math.max(open_until - now, 0) + window_ms)
return {opened, failures}
"""
# ARGV now_ms. A success closes the circuit (resets the count) unless it is open: a call that began before the
# circuit opened proves little; the probe's success, in half open, does close it.
_SUCCESS = """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'o')) or 0
if open_until == 0 or tonumber(ARGV[1]) >= open_until then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class _Ticket(NamedTuple):
    client: redis.Redis | None  # None: decided by the in-process breaker
    probe: bool
    failures: int


def _counts_as_failure(exc: BaseException) -> bool:
    return not (isinstance(exc, UnderlayError) and exc.status < 500)


def _shared_redis() -> redis.Redis | None:
    """The Redis client, unless Redis is not configured or its own breaker says it is down."""
    from underlay.redis_client import breaker, get_redis
    from underlay.settings import get_settings

    if not get_settings().redis.configured or not breaker().allow():
        return None
    return get_redis()


def _redis_failed(exc: BaseException) -> None:
    from underlay.redis_client import breaker

    breaker().failure(exc)


def _redis_ok() -> None:
    from underlay.redis_client import breaker

    breaker().success()


class BreakerCall:
    """One guarded call: `with breaker.guard() as call:`. `call.failed()` marks a failure without raising."""

    __slots__ = ("_breaker", "_failed", "_ticket")

    def __init__(self, breaker: ExternalBreaker) -> None:
        self._breaker = breaker
        self._failed = False
        self._ticket: _Ticket | None = None

    def failed(self) -> None:
        self._failed = True

    def __enter__(self) -> BreakerCall:
        self._ticket = self._breaker._acquire()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._ticket is None:
            return
        failed = self._failed or (exc is not None and self._breaker.counts(exc))
        self._breaker._record(self._ticket, ok=not failed, error=exc)


class ExternalBreaker:
    """The breaker of one external service. Thread-safe; `clock` (seconds) and `redis` are injectable."""

    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        open_seconds: float = 30.0,
        window_seconds: float = 60.0,
        key: str | None = None,
        redis: Callable[[], redis.Redis | None] = _shared_redis,
        clock: Callable[[], float] = time.time,
        counts: Callable[[BaseException], bool] = _counts_as_failure,
    ) -> None:
        from underlay.redis_client import key as redis_key

        self.name = name
        self.failures_to_open = failures
        self.open_seconds = open_seconds
        self.window_seconds = window_seconds
        self.key = key or redis_key("breaker", name)
        self.counts = counts
        self._redis = redis
        self._clock = clock
        self._local = CircuitBreaker(failures, open_seconds, on_open=self._local_opened)
        self._scripts: tuple[Any, Script, Script, Script] | None = None
        self._lock = threading.Lock()

    # --- the API ------------------------------------------------------------------------------

    def guard(self) -> BreakerCall:
        return BreakerCall(self)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.guard():
            return fn(*args, **kwargs)

    def state(self) -> BreakerState:
        """closed, open or half_open (read only: it takes no probe slot)."""
        client = self._client()
        if client is not None:
            try:
                raw = client.hmget(self.key, ["o"])[0]
            except Exception as exc:
                _redis_failed(exc)
            else:
                _redis_ok()
                open_until = int(raw or 0)
                if not open_until:
                    return "closed"
                return "open" if self._now_ms() < open_until else "half_open"
        return self._local.state

    # --- internals ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _client(self) -> redis.Redis | None:
        try:
            return self._redis()
        except Exception as exc:  # not reachable to even connect: the in-process breaker decides
            _redis_failed(exc)
            return None

    def _script(self, client: redis.Redis, index: int) -> Script:
        scripts = self._scripts
        if scripts is None or scripts[0] is not client:
            with self._lock:
                scripts = self._scripts = (
                    client,
                    client.register_script(_ALLOW),
                    client.register_script(_FAILURE),
                    client.register_script(_SUCCESS),
                )
        return scripts[index]  # type: ignore[return-value]

    def _acquire(self) -> _Ticket:
        client = self._client()
        if client is not None:
            try:
                verdict, failures, wait_ms = self._script(client, 1)(
                    keys=[self.key], args=[self._now_ms(), int(self.open_seconds * 1000)], client=client
                )
            except Exception as exc:
                _redis_failed(exc)
            else:
                _redis_ok()
                if int(verdict) == 0:
                    raise CircuitOpenError(self.name, int(wait_ms) / 1000)
                return _Ticket(client, int(verdict) == 2, int(failures))
        if not self._local.allow():
            raise CircuitOpenError(self.name, self.open_seconds)
        return _Ticket(None, self._local.state == "half_open", 0)

    def _record(self, ticket: _Ticket, *, ok: bool, error: BaseException | None) -> None:
        client = ticket.client
        if client is not None:
            try:
                if ok:
                    if ticket.failures or ticket.probe:
                        self._script(client, 3)(keys=[self.key], args=[self._now_ms()], client=client)
                    return
                opened, failures = self._script(client, 2)(
                    keys=[self.key],
                    args=[
                        self._now_ms(),
                        self.failures_to_open,
                        int(self.open_seconds * 1000),
                        int(self.window_seconds * 1000),
                    ],
                    client=client,
                )
            except Exception as exc:
                _redis_failed(exc)  # and count it in process below
            else:
                if int(opened):
                    self._opened(int(failures), error, shared=True)
                return
        if ok:
            self._local.success()
        else:
            self._local.failure(error)

    def _local_opened(self, failures: int, error: str) -> None:
        self._opened(failures, None, shared=False, error_name=error)

    def _opened(
        self, failures: int, error: BaseException | None, *, shared: bool, error_name: str = ""
    ) -> None:
        from underlay.observability import emit_metric, get_logger

        get_logger().warning(
            "external service unavailable; circuit open",
            extra={
                "dependency": self.name,
                "failures": failures,
                "error": type(error).__name__ if error is not None else error_name,
                "open_s": self.open_seconds,
                "shared": shared,
            },
        )
        emit_metric("ExternalCircuitOpened", dependency=self.name)


_breakers: dict[str, ExternalBreaker] = {}
_registry_lock = threading.Lock()


def get_breaker(name: str) -> ExternalBreaker:
    """The process-wide breaker of the external service `name`, configured from `settings.breakers`."""
    found = _breakers.get(name)
    if found is not None:
        return found
    from underlay.settings import get_settings

    with _registry_lock:
        if name not in _breakers:
            cfg = get_settings().breakers
            policy = cfg.policy(name)
            _breakers[name] = ExternalBreaker(
                name,
                failures=policy.failures,
                open_seconds=policy.open_seconds,
                window_seconds=cfg.failure_window_seconds,
            )
        return _breakers[name]


def external_breaker(name: str) -> BreakerCall:
    """`with external_breaker("payments") as call: ...`: one call through the service's breaker."""
    return get_breaker(name).guard()


def reset_breakers() -> None:
    """Forget the breakers (tests, settings changed). The shared state in Redis is left as it is."""
    with _registry_lock:
        _breakers.clear()
