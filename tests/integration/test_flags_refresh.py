"""How an instance's snapshot follows writes: the lagging `by_kind` index, the Redis stamp (set only forward, with a
TTL that heals a missed mirror), on moto and the session's real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from underlay import flags, redis_client
from underlay.flags import store
from underlay.flags.model import FlagSpec

from tests.integration.test_flags import call, checkout


@pytest.fixture
def env(aws: dict[str, str], clean_env: pytest.MonkeyPatch, redis_url: str) -> dict[str, str]:
    redis.Redis.from_url(redis_url).flushdb()
    clean_env.setenv("UNDERLAY_RATELIMIT__ENABLED", "false")
    clean_env.setenv("UNDERLAY_FLAGS__REFRESH_SECONDS", "0")
    return aws


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def stamp_key() -> str:
    return redis_client.key("flags", "stamp")


def lag_index_once(monkeypatch: pytest.MonkeyPatch, stale: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The next index query per kind answers what the index held before (`stale`: items by kind), as a lagging
    GSI does; later ones are real. Returns the kinds served stale."""
    real = store._query_kind
    served: list[str] = []

    def lagging(kind: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        if kind in stale and kind not in served:
            served.append(kind)
            return stale[kind]
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(store, "_query_kind", lagging)
    return served


def boolean(key: str, *, enabled: bool) -> FlagSpec:
    return FlagSpec(key=key, type="boolean", enabled=enabled, default=False, rollout={"percentage": 100})


def test_a_reload_during_index_lag_reads_the_new_flags(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay.flags import service

    service.create(boolean("lagging", enabled=False), "test")
    client = flags.FlagClient()
    assert client.evaluate("lagging", {"sub": "u1"}).value is False
    stale = {"flag": store._query_kind("flag")}  # the index as it was: the flag still off
    service.toggle("lagging", True, None, "test")
    served = lag_index_once(monkeypatch, stale)
    assert client.evaluate("lagging", {"sub": "u1"}).value is True  # read under the new stamp, consistently
    assert served == ["flag"]
    assert client.evaluate("lagging", {"sub": "u1"}).value is True


def test_a_flag_the_lagging_index_missed_comes_with_the_follow_up_reload(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay.flags import service

    service.create(boolean("first", enabled=True), "test")
    client = flags.FlagClient()
    client.confirm_after_seconds = 0.0
    assert client.evaluate("first", {"sub": "u1"}).value is True
    client.evaluate("first", {"sub": "u1"})  # the follow-up reload of the first load
    stale = {"flag": store._query_kind("flag")}  # without the flag created next
    service.create(boolean("second", enabled=True), "test")
    served = lag_index_once(monkeypatch, stale)
    reloads = client.reloads
    assert client.evaluate("second", {"sub": "u1"}).reason == "NOT_FOUND"  # loaded while the index lagged
    assert served == ["flag"] and client.reloads == reloads + 1
    assert client.evaluate("second", {"sub": "u1"}).value is True  # one more reload after the stamp change
    assert client.reloads == reloads + 2
    for _ in range(3):
        client.evaluate("second", {"sub": "u1"})
    assert client.reloads == reloads + 2  # only one: no reload without a new stamp


def test_the_follow_up_reload_waits_for_its_delay(env: dict[str, str]) -> None:
    from underlay.flags import service

    service.create(boolean("first", enabled=True), "test")
    client = flags.FlagClient()
    client.confirm_after_seconds = 3600.0
    for _ in range(3):
        client.evaluate("first", {})
    assert client.reloads == 1


def test_the_redis_stamp_only_moves_forward_and_expires(env: dict[str, str], r: redis.Redis) -> None:
    store.mirror_stamp("6")
    store.mirror_stamp("5")  # a writer that read its stamp before another's write mirrors late
    assert r.get(stamp_key()) == b"6"
    assert 0 < r.ttl(stamp_key()) <= store.STAMP_TTL_SECONDS
    store.mirror_stamp("7")
    assert r.get(stamp_key()) == b"7"
    r.set(stamp_key(), "garbage")
    store.mirror_stamp("8")
    assert r.get(stamp_key()) == b"8"


def test_a_mirror_missed_while_redis_was_down_heals_when_it_expires(
    env: dict[str, str], r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    call("POST", "/v1/feature-flags", body=checkout(enabled=False))
    client = flags.FlagClient()
    assert client.evaluate("new-checkout", {"country": "DE"}).value is False
    old = r.get(stamp_key())
    assert old is not None and r.ttl(stamp_key()) > 0

    class Down:
        def eval(self, *_: Any) -> Any:
            raise redis.ConnectionError("Redis is down")

    with monkeypatch.context() as m:
        m.setattr(redis_client, "get_redis", Down)
        assert call("POST", "/v1/feature-flags/new-checkout/toggle", body={"enabled": True})[0] == 200
    assert r.get(stamp_key()) == old  # the mirror was missed
    assert client.evaluate("new-checkout", {"country": "DE"}).value is False  # instances trust the old stamp
    r.delete(stamp_key())  # ... until it expires (its TTL, at most STAMP_TTL_SECONDS)
    assert client.evaluate("new-checkout", {"country": "DE"}).value is True
    assert r.get(stamp_key()) == store.read_stamp_from_table().encode()  # re-mirrored, with a TTL
    assert 0 < r.ttl(stamp_key()) <= store.STAMP_TTL_SECONDS


def half_open_with_a_probe_out(monkeypatch: pytest.MonkeyPatch) -> redis_client.CircuitBreaker:
    now = [0.0]
    breaker = redis_client.CircuitBreaker(1, 10.0, clock=lambda: now[0])
    breaker.failure()
    now[0] = 11.0
    assert breaker.allow()  # another caller is probing Redis
    monkeypatch.setattr(redis_client, "_breaker", breaker)
    return breaker


def test_a_flush_the_breaker_refuses_does_not_count_as_a_redis_failure(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    call("POST", "/v1/feature-flags", body=checkout())
    client = flags.FlagClient()
    client.evaluate("new-checkout", {"sub": "u1", "country": "DE"})
    breaker = half_open_with_a_probe_out(monkeypatch)
    assert client.flush_analytics() == 0  # the interval is dropped
    assert breaker.state == "half_open" and breaker.times_opened == 1  # not re-opened
    breaker.success()  # the probe succeeds
    assert breaker.state == "closed"


def test_analytics_are_503_when_redis_is_down(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    call("POST", "/v1/feature-flags", body=checkout())

    class Down:
        def pipeline(self, *_: Any, **__: Any) -> Any:
            raise redis.ConnectionError("Redis is down")

    with monkeypatch.context() as m:
        m.setattr(redis_client, "get_redis", Down)
        status, problem = call("GET", "/v1/feature-flags/new-checkout/analytics?days=1")
    assert status == 503 and problem["code"] == "DEPENDENCY_UNAVAILABLE"
    half_open_with_a_probe_out(monkeypatch)  # the circuit refuses: no Redis call, still a 503
    status, problem = call("GET", "/v1/feature-flags/new-checkout/analytics?days=1")
    assert status == 503 and problem["code"] == "DEPENDENCY_UNAVAILABLE"
