"""Cache benchmarks against a redis-server this module starts on a free port (and stops).

- `cache.hit_ratio_vs_raw`: one `Cache.get` hit ÷ one raw redis-py GET of the same stored bytes, same connection,
  interleaved rounds, median of the per-round ratios.
- `cache.stampede_computes`: computes seen when 50 threads miss one key at once (compute takes 100 ms).
- `cache.tag_invalidate_ms.10k` / `.1m`: `delete_by_tag` of a 1,000-key tag in a keyspace of 10k and of 1M keys
  (filled with `DEBUG POPULATE`), median of runs. The two should be close: the cost is O(keys in the tag).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.perf.registry import Figures, Target, benchmark, row

ROUNDS, OPS = 15, 2000
TAG_KEYS, TAG_RUNS = 1000, 7


@contextmanager
def redis_server() -> Iterator[int]:
    """A redis-server of our own (DEBUG POPULATE fills the 1M keyspace), stopped after; yields its port."""
    from infra.local.stack import RedisProcess

    server = RedisProcess("--enable-debug-command", "yes")
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def _cache(client: object) -> object:
    from underlay.cache import Cache
    from underlay.redis_client import CircuitBreaker
    from underlay.settings import CacheSettings

    settings = CacheSettings(stats_flush_seconds=3600)
    return Cache(client=lambda: client, settings=settings, prefix="b:", breaker=CircuitBreaker(3, 30))  # type: ignore[arg-type,return-value]


def _hit_ratio(client: object) -> float:
    from underlay.cache import keys

    cache = _cache(client)
    key = keys.MOVIE_DETAIL.build(id=42)
    value = {"id": 42, "title": "Heat", "year": 1995, "cast": ["Al Pacino", "Robert De Niro"], "rating": 8.3}
    cache.set(key, value)  # type: ignore[attr-defined]
    full = cache.full_key(key)  # type: ignore[attr-defined]
    client.set("b:raw", client.get(full))  # type: ignore[attr-defined]  # the same bytes, read raw
    get_raw, get_cached = client.get, cache.get  # type: ignore[attr-defined]
    ratios, raw_us, cached_us = [], [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(OPS):
            get_raw("b:raw")
        raw = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(OPS):
            get_cached(key)
        cached = time.perf_counter() - started
        ratios.append(cached / raw)
        raw_us.append(raw / OPS * 1e6)
        cached_us.append(cached / OPS * 1e6)
    row("raw GET (us)", raw_us)
    row("cache.get hit (us)", cached_us)
    return round(statistics.median(ratios), 3)


def _stampede(client: object) -> int:
    cache = _cache(client)
    computes = 0
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    def compute() -> str:
        nonlocal computes
        with lock:
            computes += 1
        time.sleep(0.1)
        return "value"

    def caller() -> None:
        barrier.wait()
        cache.get_or_compute("stampede", compute, ttl=60)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=caller) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return computes


def _tag_invalidate_ms(client: object, keyspace: int) -> float:
    cache = _cache(client)
    client.flushdb()  # type: ignore[attr-defined]
    client.execute_command("DEBUG", "POPULATE", keyspace - TAG_KEYS, "filler", 16)  # type: ignore[attr-defined]
    samples = []
    for _ in range(TAG_RUNS):
        pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
        for i in range(TAG_KEYS):
            full = f"b:cache:movie:detail:{i}"
            pipe.set(full, b"u1:0:0:1", ex=3600)
            pipe.sadd("b:cache-tag:movies", full)
        pipe.execute()
        started = time.perf_counter()
        deleted = cache.delete_by_tag("movies")  # type: ignore[attr-defined]
        samples.append((time.perf_counter() - started) * 1000)
        assert deleted == TAG_KEYS, deleted
    assert client.dbsize() == keyspace - TAG_KEYS  # type: ignore[attr-defined]
    row(f"delete_by_tag in {keyspace:,}", samples)
    return round(statistics.median(samples), 3)


@benchmark(
    "cache",
    targets=(
        Target("cache.hit_ratio_vs_raw", "<=", 1.15),
        Target("cache.stampede_computes", "<=", 1),
        Target("cache.stampede_computes", ">=", 1),
        Target("cache.tag_invalidate_ratio_1m_vs_10k", "<=", 1.5),
    ),
)
def cache_benchmarks() -> Figures:
    import redis
    from underlay import events

    with redis_server() as port, events.batch():  # events buffered, never sent: no bus in the benchmark
        client = redis.Redis(port=port)
        figures = {"cache.hit_ratio_vs_raw": _hit_ratio(client), "cache.stampede_computes": _stampede(client)}
        small = _tag_invalidate_ms(client, 10_000)
        large = _tag_invalidate_ms(client, 1_000_000)
        figures["cache.tag_invalidate_ms.10k"] = small
        figures["cache.tag_invalidate_ms.1m"] = large
        figures["cache.tag_invalidate_ratio_1m_vs_10k"] = round(large / small, 3)
        print(f"  hit ratio vs raw {figures['cache.hit_ratio_vs_raw']}", file=sys.stderr)
        return figures
