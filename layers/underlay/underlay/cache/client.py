"""The cache client: namespaced, TTL policy per data type, stampede-safe, tag and pattern invalidation, and a
circuit breaker so that a slow or dead Redis never fails a request.

Data operations (`get`, `set`, `get_or_compute`, ...) degrade: while Redis is failing (or the shared breaker in
`underlay.redis_client` is open) reads miss, writes are dropped and `get_or_compute` just computes.
Invalidations and statistics are operator actions that cannot be served degraded: they raise
`DependencyUnavailableError` (503).

Layout in Redis (`P` is `redis.prefix`, `underlay:` by default):
- `P` + `cache:` + logical key: an entry, stored as `u1:<compute ms>:<expires at ms>:<json>`, so one GET returns
  the value and what XFetch needs (how long it took to compute, when it expires);
- `P` + `cache-tag:<tag>`: a set of the entries' full keys, so `delete_by_tag` costs O(keys in the tag);
- `P` + `cache-lock:<logical key>`: the short compute lock;
- `P` + `cache-stats`: a hash of hit/miss counts per data type, flushed from process counters.
Only the first lives under the cache namespace, so no pattern invalidation can reach the others.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from underlay.cache.keys import OTHER, CacheKey, escape
from underlay.errors import DependencyUnavailableError, FieldError, ValidationFailedError

if TYPE_CHECKING:
    from pydantic import BaseModel
    from underlay.redis_client import CircuitBreaker
    from underlay.settings import CacheSettings

# redis-py's annotations say `bytes | str` everywhere; this client never sets decode_responses, so bytes it is.
RedisClient = Any
T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")
Key = str | CacheKey

_MAGIC = b"u1:"
_GLOB = frozenset("*?[")
_MISSING = object()
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def encode(value: Any, *, delta_ms: int = 0, expires_at_ms: int = 0) -> bytes:
    payload = value if isinstance(value, bytes) else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    return b"%s%d:%d:%s" % (_MAGIC, delta_ms, expires_at_ms, payload)


def decode(raw: bytes) -> tuple[int, int, bytes]:
    """(compute ms, expires at ms, JSON payload). A value written by someone else (INCR) is plain JSON."""
    if raw[:3] != _MAGIC:
        return 0, 0, raw
    delta, expires, payload = raw[3:].split(b":", 2)
    return int(delta), int(expires), payload


def load(raw: bytes) -> Any:
    """The value of a stored entry. The hit path: one split and orjson (half of json's time here)."""
    if raw[:3] == _MAGIC:
        return orjson.loads(raw.split(b":", 3)[3])
    return orjson.loads(raw)


def validate_pattern(pattern: str) -> str:
    """A pattern relative to the cache namespace, with a literal start: `movie:detail:*` yes, `*` or `?x` no."""
    reason = None
    if not pattern or len(pattern) > 256:
        reason = "must be 1 to 256 characters"
    elif any(ord(c) < 33 for c in pattern):
        reason = "must not contain spaces or control characters"
    elif pattern[0] in _GLOB or pattern[0] == "\\":
        reason = "must start with a literal key segment (a bare '*' would empty the whole namespace)"
    if reason:
        raise ValidationFailedError(f"The pattern {reason}.", errors=[FieldError("pattern", reason)])
    return pattern


class Cache:
    """One namespace of the cache. Get the process-wide one with `underlay.cache.get_cache()`."""

    def __init__(
        self,
        *,
        client: Callable[[], RedisClient] | None = None,
        settings: CacheSettings | None = None,
        prefix: str | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from underlay import redis_client
        from underlay.settings import get_settings

        self._client = client or redis_client.get_redis
        self._settings = settings  # None: the settings in force, so a runtime change applies (issue 5)
        base = prefix if prefix is not None else get_settings().redis.prefix
        self.namespace = f"{base}cache:"
        self._tag_prefix = f"{base}cache-tag:"
        self._lock_prefix = f"{base}cache-lock:"
        self.stats_key = f"{base}cache-stats"
        self.breaker = breaker or redis_client.breaker()
        self._clock = clock
        self._errors = redis_client.errors()
        self._release: Any = None
        self._counts: Counter[tuple[str, bool]] = Counter()  # (data type, hit) -> count, not yet flushed
        self._counts_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self.fallbacks = 0  # data operations served without Redis in this process

    @property
    def settings(self) -> CacheSettings:
        if self._settings is not None:
            return self._settings
        from underlay.settings import get_settings

        return get_settings().cache

    # --- keys and policy ------------------------------------------------------------------------

    def full_key(self, key: Key) -> str:
        return self.namespace + (key.key if isinstance(key, CacheKey) else key)

    def ttl_for(self, key: Key, ttl: int | None = None) -> int:
        if ttl is not None:
            if ttl < 1:
                raise ValueError("ttl must be at least 1 second")
            return ttl
        data_type = key.data_type if isinstance(key, CacheKey) else OTHER
        return self.settings.ttl_seconds.get(data_type, self.settings.default_ttl_seconds)

    @staticmethod
    def _type(key: Key) -> str:
        return key.data_type if isinstance(key, CacheKey) else OTHER

    # --- running against Redis ------------------------------------------------------------------

    def _degrade(self, operation: Callable[[RedisClient], T], fallback: Any) -> T:
        """Run a data operation; on a Redis failure (or an open breaker) return `fallback` instead."""
        if not self.breaker.allow():
            self.fallbacks += 1
            return fallback  # type: ignore[no-any-return]
        try:
            result = operation(self._client())
        except self._errors as error:
            self.breaker.failure(error)
            self.fallbacks += 1
            return fallback  # type: ignore[no-any-return]
        self.breaker.success()
        return result

    def _require(self, operation: Callable[[RedisClient], T]) -> T:
        """Run an operator action (invalidation, statistics); a Redis failure is a 503, not a silent no-op."""
        if not self.breaker.allow():
            raise DependencyUnavailableError("The cache is unavailable (circuit open); try again shortly.")
        try:
            result = operation(self._client())
        except self._errors as error:
            self.breaker.failure(error)
            raise DependencyUnavailableError("The cache is unavailable; try again shortly.") from error
        self.breaker.success()
        return result

    def _count(self, data_type: str, hit: bool, n: int = 1) -> None:
        self._counts[data_type, hit] += n
        if time.monotonic() - self._last_flush >= self.settings.stats_flush_seconds:
            self.flush_stats()

    def flush_stats(self) -> None:
        """Add the process's hit/miss counts to the shared hash: one pipelined round trip per interval."""
        with self._counts_lock:
            pending, self._counts = self._counts, Counter()
            self._last_flush = time.monotonic()
        if not pending:
            return

        def flush(r: RedisClient) -> None:
            pipe = r.pipeline(transaction=False)
            for (data_type, hit), n in pending.items():
                pipe.hincrby(self.stats_key, f"{data_type}:{'hits' if hit else 'misses'}", n)
            pipe.execute()

        if self._degrade(flush, _MISSING) is _MISSING:
            with self._counts_lock:
                self._counts.update(pending)  # keep them for the next flush

    # --- data operations ------------------------------------------------------------------------

    def get(self, key: Key, default: Any = None) -> Any:
        # `_degrade` spelled out: this is the hit path, and a closure per call is a measurable share of it.
        raw: Any = None
        if self.breaker.allow():
            try:
                raw = self._client().get(self.full_key(key))
            except self._errors as error:
                self.breaker.failure(error)
                self.fallbacks += 1
            else:
                self.breaker.success()
        else:
            self.fallbacks += 1
        if raw is None:
            self._count(self._type(key), hit=False)
            return default
        self._count(self._type(key), hit=True)
        return load(raw)

    def set(self, key: Key, value: Any, ttl: int | None = None, *, tags: Sequence[str] = ()) -> bool:
        """Store `value` (JSON-serialisable) for its data type's TTL. False when the write was dropped."""
        seconds = self.ttl_for(key, ttl)
        raw = encode(value, expires_at_ms=int((self._clock() + seconds) * 1000))
        return self._store(key, raw, seconds, tags)

    def _store(
        self, key: Key, raw: bytes, seconds: int, tags: Sequence[str], release: str | None = None
    ) -> bool:
        full = self.full_key(key)

        def write(r: RedisClient) -> bool:
            if not tags and release is None:
                return bool(r.set(full, raw, ex=seconds))
            pipe = r.pipeline(transaction=False)
            pipe.set(full, raw, ex=seconds)
            for tag in tags:
                tag_key = self._tag_prefix + escape(tag)
                pipe.sadd(tag_key, full)
                pipe.expire(tag_key, seconds, nx=True)  # a new tag set lives as long as its entry...
                pipe.expire(tag_key, seconds, gt=True)  # ...and is extended by longer-lived ones
            if release is not None:
                self._release_script(r)(keys=[self._lock_prefix + full], args=[release], client=pipe)
            return bool(pipe.execute()[0])

        stored = bool(self._degrade(write, False))
        rate = self.settings.entry_added_sample_rate
        if stored and rate and random.random() < rate:  # noqa: S311 (sampling, not security)
            from underlay import events

            events.publish(
                "CacheEntryAdded",
                {
                    "key": full,
                    "data_type": self._type(key),
                    "ttl_s": seconds,
                    "sampled": rate,
                },
            )
        return stored

    def delete(self, *keys: Key) -> int:
        """Remove entries (UNLINK: freed in the background). Returns how many existed; 0 when Redis is down."""
        if not keys:
            return 0
        return int(self._degrade(lambda r: r.unlink(*(self.full_key(k) for k in keys)), 0))

    def exists(self, key: Key) -> bool:
        return bool(self._degrade(lambda r: r.exists(self.full_key(key)), 0))

    def expire(self, key: Key, seconds: int) -> bool:
        return bool(self._degrade(lambda r: r.expire(self.full_key(key), seconds), False))

    def ttl(self, key: Key) -> int | None:
        """Seconds left, or None for a missing key (or Redis down)."""
        left = self._degrade(lambda r: r.ttl(self.full_key(key)), -2)
        return None if left < 0 else int(left)

    def mget(self, keys: Sequence[Key], default: Any = None) -> list[Any]:
        """Many values in one round trip (MGET), in order; missing ones are `default`."""
        if not keys:
            return []
        raws = self._degrade(lambda r: r.mget([self.full_key(k) for k in keys]), [None] * len(keys))
        values = []
        for key, raw in zip(keys, raws, strict=True):
            self._count(self._type(key), hit=raw is not None)
            values.append(default if raw is None else load(raw))
        return values

    def mset(self, items: Mapping[Key, Any] | Iterable[tuple[Key, Any]], ttl: int | None = None) -> bool:
        """Store many entries in one pipelined round trip, each with its own data type's TTL."""
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        if not pairs:
            return True
        now = self._clock()

        def write(r: RedisClient) -> bool:
            pipe = r.pipeline(transaction=False)
            for key, value in pairs:
                seconds = self.ttl_for(key, ttl)
                raw = encode(value, expires_at_ms=int((now + seconds) * 1000))
                pipe.set(self.full_key(key), raw, ex=seconds)
            return all(pipe.execute())

        return bool(self._degrade(write, False))

    def incr(self, key: Key, amount: int = 1, ttl: int | None = None) -> int | None:
        """Atomic counter; the TTL is set when the counter is created. None when Redis is down."""
        full, seconds = self.full_key(key), self.ttl_for(key, ttl)

        def run(r: RedisClient) -> int:
            pipe = r.pipeline(transaction=False)
            pipe.incrby(full, amount)
            pipe.expire(full, seconds, nx=True)
            return int(pipe.execute()[0])

        return self._degrade(run, None)

    def decr(self, key: Key, amount: int = 1, ttl: int | None = None) -> int | None:
        return self.incr(key, -amount, ttl)

    def get_model(self, key: Key, model: type[M]) -> M | None:
        """A pydantic model stored with `set_model`; None if missing or no longer valid for the model."""
        raw = self._degrade(lambda r: r.get(self.full_key(key)), None)
        self._count(self._type(key), hit=raw is not None)
        if raw is None:
            return None
        from pydantic import ValidationError

        try:
            return model.model_validate_json(decode(raw)[2])
        except ValidationError:
            return None  # written by an older schema: a miss, recomputed by the caller

    def set_model(
        self, key: Key, value: BaseModel, ttl: int | None = None, *, tags: Sequence[str] = ()
    ) -> bool:
        seconds = self.ttl_for(key, ttl)
        raw = encode(value.model_dump_json().encode(), expires_at_ms=int((self._clock() + seconds) * 1000))
        return self._store(key, raw, seconds, tags)

    # --- get_or_compute with stampede protection ------------------------------------------------

    def get_or_compute(
        self, key: Key, compute: Callable[[], T], ttl: int | None = None, *, tags: Sequence[str] = ()
    ) -> T:
        """The cached value, or `compute()` stored for the TTL. Only one caller computes a missing key.

        XFetch (Vattani et al.) recomputes a little before expiry, with a probability that rises as expiry
        nears and with how long the value takes to compute, so hot keys rarely expire at all. Whoever decides to
        recompute takes a short lock; others keep serving the current value, or, on a hard miss, wait up to
        `lock_wait_seconds` for the winner's value before computing themselves. Redis trouble: just compute.
        """
        data_type = self._type(key)
        full = self.full_key(key)
        raw = self._degrade(lambda r: r.get(full), _MISSING)
        if raw is _MISSING:  # Redis is unavailable: never fail, never wait
            self._count(data_type, hit=False)
            return compute()
        if raw is not None:
            delta_ms, expires_at_ms, payload = decode(raw)
            if not self._recompute_early(delta_ms, expires_at_ms):
                self._count(data_type, hit=True)
                return load(payload)  # type: ignore[no-any-return]
            token = self._try_lock(full)
            if token is None:  # someone else is already refreshing it
                self._count(data_type, hit=True)
                return load(payload)  # type: ignore[no-any-return]
            self._count(data_type, hit=False)
            return self._compute_and_store(key, compute, ttl, tags, token)
        self._count(data_type, hit=False)
        token = self._try_lock(full)
        if token is not None:
            return self._compute_and_store(key, compute, ttl, tags, token)
        waited = self._wait_for(full)
        if waited is not _MISSING:
            return waited  # type: ignore[no-any-return]
        return compute()  # the winner is slow or failed; don't make this request wait any longer

    def _recompute_early(self, delta_ms: int, expires_at_ms: int) -> bool:
        if not delta_ms or not expires_at_ms:
            return False
        gap = -delta_ms * self.settings.xfetch_beta * math.log(max(random.random(), 1e-12))  # noqa: S311
        return self._clock() * 1000 + gap >= expires_at_ms

    def _try_lock(self, full: str) -> str | None:
        token = uuid.uuid4().hex
        lock_ms = int(self.settings.lock_seconds * 1000)
        got = self._degrade(lambda r: r.set(self._lock_prefix + full, token, nx=True, px=lock_ms), None)
        return token if got else None

    def _wait_for(self, full: str) -> Any:
        deadline = time.monotonic() + self.settings.lock_wait_seconds
        pause = 0.01
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)
            raw = self._degrade(lambda r: r.get(full), _MISSING)
            if raw is _MISSING:
                return _MISSING
            if raw is not None:
                return load(raw)
        return _MISSING

    def _compute_and_store(
        self, key: Key, compute: Callable[[], T], ttl: int | None, tags: Sequence[str], token: str
    ) -> T:
        started = time.perf_counter()
        try:
            value = compute()
        except BaseException:
            full = self.full_key(key)
            self._degrade(lambda r: self._release_script(r)(keys=[self._lock_prefix + full], args=[token]), 0)
            raise
        delta_ms = max(1, int((time.perf_counter() - started) * 1000))
        seconds = self.ttl_for(key, ttl)
        raw = encode(value, delta_ms=delta_ms, expires_at_ms=int((self._clock() + seconds) * 1000))
        self._store(key, raw, seconds, tags, release=token)
        return value

    def _release_script(self, r: RedisClient) -> Any:
        if self._release is None:
            self._release = r.register_script(_RELEASE_LOCK)
        return self._release

    # --- invalidation (operator actions: 503 when Redis is down) --------------------------------

    def invalidate(self, key: Key) -> int:
        """Delete one entry and announce it (CacheInvalidated). Returns 1 if it existed."""
        deleted = int(self._require(lambda r: r.unlink(self.full_key(key))))
        self._invalidated("key", key.key if isinstance(key, CacheKey) else key, deleted)
        return deleted

    def delete_by_pattern(self, pattern: str) -> int:
        """Delete every entry matching a glob relative to the namespace: SCAN with COUNT, UNLINK in batches."""
        validate_pattern(pattern)
        match = self.namespace + pattern
        namespace = self.namespace.encode()
        batch = self.settings.unlink_batch

        def run(r: RedisClient) -> int:
            deleted, cursor = 0, 0
            while True:
                cursor, found = r.scan(cursor, match=match, count=self.settings.scan_count)
                keys = [k for k in found if k.startswith(namespace)]  # belt and braces: never outside
                for start in range(0, len(keys), batch):
                    deleted += int(r.unlink(*keys[start : start + batch]))
                if cursor == 0:
                    return deleted

        deleted = self._require(run)
        self._invalidated("pattern", pattern, deleted)
        return deleted

    def delete_by_tag(self, tag: str) -> int:
        """Delete every entry stored with `tags=[tag]`: O(keys in the tag), whatever the keyspace size."""
        tag_key = self._tag_prefix + escape(tag)
        batch = self.settings.unlink_batch

        def run(r: RedisClient) -> int:
            deleted, cursor = 0, 0
            while True:
                cursor, members = r.sscan(tag_key, cursor, count=batch)
                if members:
                    deleted += int(r.unlink(*members))
                if cursor == 0:
                    r.unlink(tag_key)
                    return deleted

        deleted = self._require(run)
        self._invalidated("tag", tag, deleted)
        return deleted

    def _invalidated(self, kind: str, target: str, deleted: int) -> None:
        from underlay import events

        events.publish("CacheInvalidated", {"kind": kind, "target": target, "deleted": deleted})

    # --- statistics -----------------------------------------------------------------------------

    def statistics(self, top: int = 10) -> dict[str, Any]:
        """Hit ratio per data type (all instances), memory, key counts and the biggest keys of a sample."""
        self.flush_stats()
        sample = self.settings.top_keys_sample

        def run(r: RedisClient) -> tuple[dict[bytes, bytes], dict[str, Any], int, list[tuple[bytes, int]]]:
            counts = r.hgetall(self.stats_key)
            memory = r.info("memory")
            total = int(r.dbsize())
            sizes: list[tuple[bytes, int]] = []
            if sample:
                _, keys = r.scan(0, match=self.namespace + "*", count=sample)
                pipe = r.pipeline(transaction=False)
                for k in keys:
                    pipe.memory_usage(k)
                sizes = [(k, int(n or 0)) for k, n in zip(keys, pipe.execute(), strict=True)]
            return counts, memory, total, sizes

        counts, memory, total, sizes = self._require(run)
        by_type: dict[str, dict[str, float]] = {}
        for field, value in counts.items():
            data_type, _, kind = field.decode().rpartition(":")
            by_type.setdefault(data_type, {"hits": 0, "misses": 0})[kind] = int(value)
        for figures in by_type.values():
            lookups = figures["hits"] + figures["misses"]
            figures["hit_ratio"] = round(figures["hits"] / lookups, 4) if lookups else 0.0
        hits = sum(int(f["hits"]) for f in by_type.values())
        lookups = hits + sum(int(f["misses"]) for f in by_type.values())
        sizes.sort(key=lambda item: item[1], reverse=True)
        strip = len(self.namespace)
        return {
            "hit_ratio": round(hits / lookups, 4) if lookups else 0.0,
            "hits": hits,
            "misses": lookups - hits,
            "by_type": by_type,
            "memory": {
                "used_bytes": int(memory.get("used_memory", 0)),
                "max_bytes": int(memory.get("maxmemory", 0)),
                "fragmentation_ratio": float(memory.get("mem_fragmentation_ratio", 0) or 0),
            },
            "keys": {"total": total, "sampled": len(sizes)},
            "top_keys": [{"key": k.decode(errors="replace")[strip:], "bytes": n} for k, n in sizes[:top]],
            "circuit": self.breaker.state,
        }
