"""Feature flags for your functions: in-memory evaluation with no I/O on the hot path.

    from underlay import flags
    if flags.evaluate("new-checkout", {"sub": user_id, "country": "DE"}, default=False).value: ...

The process holds a compiled snapshot of every flag (`underlay.flags.engine`). At most every
`flags.refresh_seconds` (5 s) an evaluation checks the version stamp in Redis (the table's when Redis is down);
a changed stamp reloads the snapshot from DynamoDB, and one more reload follows shortly after (a flag created just
before the load may not be in the `by_kind` index yet; see `underlay.flags.store`). If the store is unreachable the
last good snapshot keeps serving; before there ever was one, callers get their own default (reason ERROR).

Analytics never cost a write per evaluation: counts per flag, variant and day, unique users (HyperLogLog) and the
last evaluation time are kept in process and flushed in one pipelined Redis call every
`flags.analytics_flush_seconds`, with one aggregated FeatureFlagEvaluated event.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from underlay.flags.engine import Evaluation, Snapshot
    from underlay.settings import FlagsSettings

MAX_USERS_PER_FLUSH = 10_000  # unique-user samples kept between flushes per flag and day


class FlagClient:
    # After a reload under a new stamp, reload once more on the first refresh at least this much later: the flag
    # documents are read consistently, but the index that lists them lags (typically well under a second), so a
    # flag or segment created just before the reload can be missing from it; the stamp will not change again
    # to trigger another reload, so without this one the instance would miss it until the next write.
    confirm_after_seconds = 1.0

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._confirm_at: float | None = None  # when the follow-up reload after a stamp change is due
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()  # (key, variant, day)
        self._users: defaultdict[tuple[str, str], set[str]] = defaultdict(set)  # (key, day) -> subs
        self._last: dict[str, str] = {}
        self._flushed = time.monotonic()
        self.reloads = 0

    @property
    def settings(self) -> FlagsSettings:
        """The settings in force, so a runtime change of the refresh interval applies (issue 5)."""
        from underlay.settings import get_settings

        return get_settings().flags

    # --- the snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        if time.monotonic() - self._checked >= self.settings.refresh_seconds:
            self.refresh()
        return self._snapshot

    def refresh(self, *, force: bool = False) -> None:
        """Reload if the stamp moved (or `force`, or the follow-up reload after a stamp change is due). Never
        raises: a failing store keeps the last snapshot."""
        with self._lock:
            now = self._checked = time.monotonic()
            try:
                stamp = self._stamp()
                before = self._snapshot.version if self._snapshot is not None else None
                confirm = self._confirm_at is not None and now >= self._confirm_at
                if force or confirm or stamp != before:
                    if self._load() != before:
                        self._confirm_at = now + self.confirm_after_seconds
                    elif confirm:
                        self._confirm_at = None
            except Exception as error:
                from underlay.observability import get_logger

                get_logger().warning(
                    "flag refresh failed; serving the last snapshot", extra={"error": type(error).__name__}
                )

    def _stamp(self) -> str:
        """The stamp in Redis; the table's when Redis is down, or when the mirror expired (then re-mirrored)."""
        from underlay.flags import store
        from underlay.redis_client import breaker, get_redis, key

        if breaker().allow():
            try:
                value = get_redis().get(key("flags", "stamp"))
                breaker().success()
            except Exception as error:
                breaker().failure(error)
            else:
                if value is not None:
                    return str(value.decode() if isinstance(value, bytes) else value)
                stamp = store.read_stamp_from_table()
                store.mirror_stamp(stamp)  # set if greater: never moves a newer writer's stamp back
                return stamp
        return store.read_stamp_from_table()

    def _load(self) -> str:
        """Load and compile every flag; returns the stamp they were read under."""
        from underlay.flags import store
        from underlay.flags.engine import Snapshot

        flags, segments, stamp = store.load_all()
        self._snapshot = Snapshot.compile(flags, segments, version=stamp)
        self.reloads += 1
        return stamp

    # --- evaluation -----------------------------------------------------------------------------

    def evaluate(self, key: str, context: Mapping[str, Any], default: Any = None) -> Evaluation:
        snapshot = self.snapshot()
        if snapshot is None:
            from underlay.flags.engine import Evaluation

            return Evaluation(
                key, default, None, "ERROR", error="no flag snapshot yet (the store is unreachable)"
            )
        result = snapshot.evaluate(key, context, default)
        self._record(result, context)
        return result

    def evaluate_all(self, context: Mapping[str, Any]) -> list[Evaluation]:
        snapshot = self.snapshot()
        if snapshot is None:
            return []
        results = snapshot.evaluate_all(context)
        for result in results:
            self._record(result, context)
        return results

    # --- analytics ------------------------------------------------------------------------------

    def _record(self, result: Evaluation, context: Mapping[str, Any]) -> None:
        if result.reason == "NOT_FOUND":
            return
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        self._counts[result.key, result.variant or "default", day] += 1
        sub = context.get("sub")
        if sub is not None:
            users = self._users[result.key, day]
            if len(users) < MAX_USERS_PER_FLUSH:
                users.add(str(sub))
        self._last[result.key] = day
        if time.monotonic() - self._flushed >= self.settings.analytics_flush_seconds:
            self.flush_analytics()

    def flush_analytics(self) -> int:
        """One pipelined Redis call with everything counted since the last flush; returns evaluations flushed."""
        with self._lock:
            counts, users, last = self._counts, self._users, self._last
            self._counts, self._users, self._last = Counter(), defaultdict(set), {}
            self._flushed = time.monotonic()
        if not counts:
            return 0
        from underlay.redis_client import breaker, get_redis
        from underlay.redis_client import key as rkey

        ttl = self.settings.analytics_days * 86400
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if not breaker().allow():
            return (
                0  # Redis was not tried (the circuit is open): the interval is dropped, the breaker not told
            )
        try:
            pipe = get_redis().pipeline(transaction=False)
            for (flag, variant, day), n in counts.items():
                name = rkey("flags", "eval", flag, day)
                pipe.hincrby(name, variant, n)
                pipe.expire(name, ttl)
            for (flag, day), subs in users.items():
                name = rkey("flags", "users", flag, day)
                pipe.pfadd(name, *subs)
                pipe.expire(name, ttl)
            for flag in last:
                pipe.set(rkey("flags", "last", flag), now, ex=ttl)
            pipe.execute()
            breaker().success()
        except Exception as error:
            breaker().failure(error)
            return 0  # analytics are best effort: a lost interval, never a failed evaluation
        from underlay import events

        total = sum(counts.values())
        by_flag: Counter[str] = Counter()
        for (flag, _, _), n in counts.items():
            by_flag[flag] += n
        events.publish("FeatureFlagEvaluated", {"evaluations": total, "by_flag": dict(by_flag)})
        return total


def analytics(key: str, days: int = 7) -> dict[str, Any]:
    """Per-day evaluations by variant and unique users, and when the flag was last evaluated.

    Raises `DependencyUnavailableError` (503) when Redis is unreachable or its circuit is open."""
    from datetime import timedelta

    from underlay.errors import DependencyUnavailableError
    from underlay.redis_client import breaker, get_redis
    from underlay.redis_client import key as rkey

    today = datetime.now(UTC).date()
    dates = [(today - timedelta(days=n)).isoformat() for n in range(days)]
    if not breaker().allow():
        raise DependencyUnavailableError(
            "Flag analytics are unavailable (Redis circuit open); try again shortly."
        )
    try:
        pipe = get_redis().pipeline(transaction=False)
        for day in dates:
            pipe.hgetall(rkey("flags", "eval", key, day))
            pipe.pfcount(rkey("flags", "users", key, day))
        pipe.get(rkey("flags", "last", key))
        replies = pipe.execute()
    except Exception as error:
        breaker().failure(error)
        raise DependencyUnavailableError("Flag analytics are unavailable; try again shortly.") from error
    breaker().success()
    per_day = []
    for i, day in enumerate(dates):
        variants = {k.decode(): int(v) for k, v in replies[2 * i].items()}
        per_day.append(
            {
                "date": day,
                "evaluations": sum(variants.values()),
                "variants": variants,
                "unique_users": int(replies[2 * i + 1]),
            }
        )
    last = replies[-1]
    return {"key": key, "days": per_day, "last_evaluated_at": last.decode() if last else None}


_client: FlagClient | None = None
_client_lock = threading.Lock()


def client() -> FlagClient:
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = FlagClient()
    return _client


def reset_flags() -> None:
    global _client
    with _client_lock:
        _client = None


def evaluate(key: str, context: Mapping[str, Any], default: Any = None) -> Evaluation:
    """Evaluate one flag for a context (`sub` and any attributes your rules use)."""
    return client().evaluate(key, context, default)
