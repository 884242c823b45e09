"""The cache client against a real redis-server: TTL policy, operations, tags, patterns, stampede, fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from pydantic import BaseModel
from underlay.cache import Cache, keys
from underlay.cache.client import decode
from underlay.errors import DependencyUnavailableError, ValidationFailedError
from underlay.redis_client import CircuitBreaker
from underlay.settings import CacheSettings

from tests.conftest import free_port


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def make_cache(raw: redis.Redis, **overrides: object) -> Cache:
    settings = CacheSettings(**overrides)  # type: ignore[arg-type]
    return Cache(
        client=lambda: raw,
        settings=settings,
        prefix="t:",
        breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_seconds),
    )


def test_ttl_policy_per_data_type(raw: redis.Redis) -> None:
    cache = make_cache(raw)
    expected = {"detail": 3600, "list": 600, "rankings": 86400, "autocomplete": 300, "banners": 600}
    built = {
        "detail": keys.MOVIE_DETAIL.build(id=42),
        "list": keys.MOVIES_LIST.build(hash="abc"),
        "rankings": keys.RANKINGS.build(type="weekly"),
        "autocomplete": keys.AUTOCOMPLETE.build(q="star wars"),
        "banners": keys.HOME_BANNERS.build(),
    }
    for data_type, key in built.items():
        assert key.data_type == data_type
        assert cache.set(key, {"v": data_type})
        assert raw.ttl(cache.full_key(key)) == expected[data_type], data_type
    assert cache.set("plain", 1) and raw.ttl("t:cache:plain") == 600  # default for untyped keys
    assert cache.set("plain", 1, ttl=5) and raw.ttl("t:cache:plain") == 5


def test_ttl_policy_comes_from_config(raw: redis.Redis) -> None:
    cache = make_cache(raw, ttl_seconds={"detail": 42})
    cache.set(keys.MOVIE_DETAIL.build(id=1), "x")
    assert raw.ttl("t:cache:movie:detail:1") == 42


def test_key_parameters_are_escaped(raw: redis.Redis) -> None:
    key = keys.AUTOCOMPLETE.build(q="star*wars: a new?hope")
    assert key.key == "search:autocomplete:star%2Awars%3A%20a%20new%3Fhope"
    with pytest.raises(ValueError):
        keys.define("bad", "x:{a}:*", "detail")
    app_key = keys.define("session", "session:{sid}", "session")
    assert app_key.build(sid="s1") == ("session:s1", "session")


def test_operations(raw: redis.Redis) -> None:
    cache = make_cache(raw)
    assert cache.get("missing", default="d") == "d"
    cache.set("a", {"n": 1})
    assert cache.get("a") == {"n": 1} and cache.exists("a") and not cache.exists("b")
    assert cache.expire("a", 7) and cache.ttl("a") == 7
    assert cache.mset({"m1": [1], "m2": "two"}, ttl=30)
    assert cache.mget(["m1", "nope", "m2"], default=0) == [[1], 0, "two"]
    assert cache.incr("counter") == 1 and cache.incr("counter", 5) == 6 and cache.decr("counter", 2) == 4
    assert cache.get("counter") == 4  # a counter reads back as a number
    assert cache.delete("a", "m1", "nope") == 2 and cache.get("a") is None


class Movie(BaseModel):
    id: int
    title: str


class Other(BaseModel):
    name: str


def test_typed_models(raw: redis.Redis) -> None:
    cache = make_cache(raw)
    key = keys.MOVIE_DETAIL.build(id=7)
    cache.set_model(key, Movie(id=7, title="Heat"))
    assert cache.get_model(key, Movie) == Movie(id=7, title="Heat")
    assert cache.get_model(key, Other) is None  # a schema change reads as a miss, not an error


def test_tags_delete_only_their_keys(raw: redis.Redis) -> None:
    cache = make_cache(raw)
    for i in range(5):
        cache.set(keys.MOVIE_DETAIL.build(id=i), i, tags=["movies", f"movie:{i}"])
    cache.set("unrelated", 1)
    assert cache.delete_by_tag("movie:3") == 1
    assert cache.get(keys.MOVIE_DETAIL.build(id=3)) is None
    assert cache.delete_by_tag("movies") == 4
    assert cache.get("unrelated") == 1
    assert not raw.exists("t:cache-tag:movies")
    assert cache.delete_by_tag("movies") == 0


def test_tag_sets_live_as_long_as_their_longest_entry(raw: redis.Redis) -> None:
    cache = make_cache(raw)
    cache.set("short", 1, ttl=10, tags=["t"])
    assert raw.ttl("t:cache-tag:t") == 10
    cache.set("long", 1, ttl=100, tags=["t"])
    cache.set("short2", 1, ttl=10, tags=["t"])
    assert raw.ttl("t:cache-tag:t") == 100


def test_pattern_delete_is_confined_to_the_namespace(raw: redis.Redis) -> None:
    cache = make_cache(raw, scan_count=10, unlink_batch=7)
    for i in range(50):
        cache.set(keys.MOVIE_DETAIL.build(id=i), i)
    cache.set(keys.MOVIES_LIST.build(hash="x"), [])
    raw.set("movie:detail:outside", 1)  # the same shape, outside the namespace
    raw.set("t:other:movie:detail:1", 1)
    assert cache.delete_by_pattern("movie:detail:*") == 50
    assert cache.get(keys.MOVIES_LIST.build(hash="x")) == []
    assert raw.exists("movie:detail:outside") and raw.exists("t:other:movie:detail:1")


@pytest.mark.parametrize("pattern", ["*", "**", "?", "[a]*", "", "a b*", "x" * 300])
def test_dangerous_patterns_are_refused(raw: redis.Redis, pattern: str) -> None:
    cache = make_cache(raw)
    cache.set("keep", 1)
    with pytest.raises(ValidationFailedError) as caught:
        cache.delete_by_pattern(pattern)
    assert caught.value.status == 422 and caught.value.errors[0].field == "pattern"
    assert cache.get("keep") == 1


def test_stampede_fifty_threads_compute_once(raw: redis.Redis) -> None:
    cache = make_cache(raw)
    computes = 0
    lock = threading.Lock()

    def compute() -> dict[str, int]:
        nonlocal computes
        with lock:
            computes += 1
        time.sleep(0.2)
        return {"answer": 42}

    results: list[object] = []
    barrier = threading.Barrier(50)

    def caller() -> None:
        barrier.wait()
        results.append(cache.get_or_compute("hot", compute, ttl=60))

    threads = [threading.Thread(target=caller) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert computes == 1
    assert results == [{"answer": 42}] * 50
    assert not raw.exists("t:cache-lock:t:cache:hot")  # released with the write


def test_xfetch_recomputes_before_expiry_and_records_compute_time(
    raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    cache = Cache(
        client=lambda: raw,
        settings=CacheSettings(),
        prefix="t:",
        breaker=CircuitBreaker(3, 30),
        clock=lambda: now[0],
    )
    calls = []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.02)
        return len(calls)

    from underlay.cache import client as cache_client

    class Draw:  # XFetch's random draw, fixed: the early-recompute gap is -delta * beta * ln(draw)
        value = 0.5

        @classmethod
        def random(cls) -> float:
            return cls.value

    monkeypatch.setattr(cache_client, "random", Draw)
    assert cache.get_or_compute("x", compute, ttl=60) == 1
    delta_ms, expires_at_ms, _ = decode(raw.get("t:cache:x"))  # type: ignore[arg-type]
    assert delta_ms >= 20 and expires_at_ms == 1_000_060_000
    now[0] += 59.9  # 100 ms before expiry; gap = delta * ln 2, well under 100 ms: a plain hit
    assert cache.get_or_compute("x", compute, ttl=60) == 1
    Draw.value = 1e-6  # an unlucky draw: gap = delta * 13.8 > 100 ms, so this caller recomputes early
    assert cache.get_or_compute("x", compute, ttl=60) == 2


def test_a_failing_compute_releases_the_lock(raw: redis.Redis) -> None:
    cache = make_cache(raw)

    def boom() -> int:
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", boom)
    assert not raw.keys("t:cache-lock:*")
    assert cache.get_or_compute("k", lambda: 5) == 5


def test_hits_and_misses_are_counted_per_type_and_flushed(raw: redis.Redis) -> None:
    cache = make_cache(raw, stats_flush_seconds=3600)
    key = keys.MOVIE_DETAIL.build(id=1)
    cache.get(key)
    cache.set(key, 1)
    cache.get(key)
    cache.get(key)
    cache.get("plain")
    assert raw.hgetall("t:cache-stats") == {}  # counted in process, no round trip yet
    stats = cache.statistics()
    assert stats["by_type"]["detail"] == {"hits": 2, "misses": 1, "hit_ratio": 0.6667}
    assert stats["by_type"]["other"]["misses"] == 1
    assert stats["hits"] == 2 and stats["misses"] == 2 and stats["hit_ratio"] == 0.5
    assert stats["memory"]["used_bytes"] > 0 and stats["keys"]["total"] >= 1
    assert stats["top_keys"][0]["key"] == "movie:detail:1" and stats["circuit"] == "closed"


def test_redis_down_degrades_data_ops_and_refuses_operator_ops() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    breaker = CircuitBreaker(3, 30)
    reached = []

    def client() -> redis.Redis:
        reached.append(1)
        return dead

    cache = Cache(client=client, settings=CacheSettings(), prefix="t:", breaker=breaker)
    assert cache.get("k", default="d") == "d"
    assert cache.set("k", 1) is False
    assert cache.get_or_compute("k", lambda: "computed") == "computed"
    assert breaker.state == "open" and len(reached) == 3
    for _ in range(100):  # the breaker is open: Redis is not even asked, so nobody waits on a timeout
        assert cache.get_or_compute("k", lambda: "computed") == "computed"
    assert len(reached) == 3
    assert cache.fallbacks >= 100
    with pytest.raises(DependencyUnavailableError):
        cache.delete_by_tag("t")
    with pytest.raises(DependencyUnavailableError):
        cache.statistics()
