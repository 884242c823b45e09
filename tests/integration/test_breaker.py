"""The external-service circuit breaker against a real redis-server: shared state, probes, Redis down."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from underlay.breaker import ExternalBreaker, external_breaker, get_breaker
from underlay.errors import CircuitOpenError, NotFoundError, problem

from tests.conftest import REPO, free_port

PREFIX = "obs-test:"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shared(clean_env: pytest.MonkeyPatch, redis_url: str) -> Iterator[redis.Redis]:
    clean_env.setenv("UNDERLAY_REDIS__URL", redis_url)
    clean_env.setenv("UNDERLAY_REDIS__PREFIX", PREFIX)
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(f"{PREFIX}breaker:*"):
        r.delete(key)
    yield r
    r.close()


def _instance(redis_url: str, clock: Clock, **policy: Any) -> ExternalBreaker:
    """A breaker as another Lambda instance would hold it: its own object, its own Redis connection."""
    client = redis.Redis.from_url(redis_url)
    return ExternalBreaker("payments", redis=lambda: client, clock=clock, **policy)


def _fail(breaker: ExternalBreaker) -> None:
    with pytest.raises(ConnectionError), breaker.guard():
        raise ConnectionError("payments refused")


def _ok(breaker: ExternalBreaker) -> str:
    return breaker.call(lambda: "paid")


def test_five_failures_open_it_for_thirty_seconds(shared: redis.Redis) -> None:
    breaker = get_breaker("payments")  # from settings: the defaults
    assert (breaker.failures_to_open, breaker.open_seconds) == (5, 30.0)
    for _ in range(4):
        _fail(breaker)
    assert breaker.state() == "closed"
    _fail(breaker)
    assert breaker.state() == "open"
    with pytest.raises(CircuitOpenError) as refused:
        _ok(breaker)
    rendered = problem(refused.value, instance="/v1/pay", correlation_id="c")
    assert rendered.status == 503 and rendered.body["code"] == "DEPENDENCY_UNAVAILABLE"
    assert 1 <= int(rendered.headers["Retry-After"]) <= 30
    keys = [k.decode() for k in shared.scan_iter("*breaker*")]
    assert keys == [f"{PREFIX}breaker:payments"]  # under the configured prefix
    assert 30_000 < shared.pttl(keys[0]) <= 90_000  # open 30 s + the 60 s failure window


def test_the_state_is_shared_across_instances(shared: redis.Redis, redis_url: str) -> None:
    clock = Clock()
    a, b = _instance(redis_url, clock), _instance(redis_url, clock)
    for breaker in (a, b, a, b):
        _fail(breaker)
    assert a.state() == b.state() == "closed"
    _fail(b)  # the fifth failure, on the other instance
    with pytest.raises(CircuitOpenError):
        _ok(a)
    assert a.state() == "open"


def test_a_process_sees_what_another_process_opened(shared: redis.Redis, redis_url: str) -> None:
    script = f"""
import redis
from underlay.breaker import ExternalBreaker
client = redis.Redis.from_url({redis_url!r})
b = ExternalBreaker("payments", key={PREFIX + "breaker:payments"!r}, redis=lambda: client)
for _ in range(5):
    try:
        with b.guard():
            raise TimeoutError("slow")
    except TimeoutError:
        pass
print(b.state())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip().splitlines()[-1] == "open", done.stderr
    with pytest.raises(CircuitOpenError), external_breaker("payments"):
        pass


def test_a_success_resets_the_count(shared: redis.Redis, redis_url: str) -> None:
    clock = Clock()
    breaker = _instance(redis_url, clock)
    for _ in range(4):
        _fail(breaker)
    assert _ok(breaker) == "paid"
    for _ in range(4):
        _fail(breaker)
    assert breaker.state() == "closed"


def test_the_callers_own_4xx_is_not_a_failure(shared: redis.Redis, redis_url: str) -> None:
    breaker = _instance(redis_url, Clock(), failures=1)
    with pytest.raises(NotFoundError), breaker.guard():
        raise NotFoundError("no such order")
    assert breaker.state() == "closed"
    with breaker.guard() as call:
        call.failed()  # a 5xx answer, say: no exception, still a failure
    assert breaker.state() == "open"


def test_half_open_lets_exactly_one_probe_through(shared: redis.Redis, redis_url: str) -> None:
    clock = Clock()
    a, b = _instance(redis_url, clock, failures=2), _instance(redis_url, clock, failures=2)
    _fail(a)
    _fail(a)
    clock.now += 29.9
    assert a.state() == "open"
    clock.now += 0.2
    assert a.state() == b.state() == "half_open"
    probe = a.guard()
    probe.__enter__()  # the probe is in flight on instance a ...
    with pytest.raises(CircuitOpenError):
        _ok(b)  # ... so b (and a second caller on a) is refused
    with pytest.raises(CircuitOpenError):
        _ok(a)
    probe.__exit__(ConnectionError, ConnectionError("still down"), None)  # the probe fails: open again
    assert b.state() == "open"
    clock.now += 30.1
    assert _ok(b) == "paid"  # b's probe succeeds: closed for everyone
    assert a.state() == "closed" and _ok(a) == "paid"
    assert shared.exists(f"{PREFIX}breaker:payments") == 0


def test_a_probe_that_never_reports_back_frees_the_slot(shared: redis.Redis, redis_url: str) -> None:
    clock = Clock()
    breaker = _instance(redis_url, clock, failures=1, open_seconds=10)
    _fail(breaker)
    clock.now += 10
    breaker.guard().__enter__()  # its Lambda timed out mid-call: no success or failure is ever recorded
    with pytest.raises(CircuitOpenError):
        _ok(breaker)
    clock.now += 10
    assert _ok(breaker) == "paid"


def test_concurrent_callers_in_half_open_get_one_probe(shared: redis.Redis, redis_url: str) -> None:
    clock = Clock()
    instances = [_instance(redis_url, clock, failures=1) for _ in range(8)]
    _fail(instances[0])
    clock.now += 31
    admitted: list[int] = []
    start = threading.Barrier(len(instances))

    def attempt(i: int) -> None:
        start.wait()
        try:
            instances[i].guard().__enter__()
            admitted.append(i)
        except CircuitOpenError:
            pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(instances))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 1


def test_with_redis_down_each_instance_falls_back_to_its_own_breaker(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("UNDERLAY_REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    clean_env.setenv(
        "UNDERLAY_BREAKERS__SERVICES", json.dumps({"payments": {"failures": 3, "open_seconds": 0.2}})
    )
    breaker = get_breaker("payments")
    for _ in range(3):
        _fail(breaker)  # Redis errors are not raised: the in-process breaker counts
    with pytest.raises(CircuitOpenError):
        _ok(breaker)
    assert breaker.state() == "open"
    from underlay.redis_client import breaker as redis_breaker

    assert redis_breaker().state == "open"  # Redis itself is skipped now, without a connection attempt
    import time

    time.sleep(0.25)
    assert _ok(breaker) == "paid" and breaker.state() == "closed"


def test_without_redis_configured_the_breaker_is_in_process(clean_env: pytest.MonkeyPatch) -> None:
    breaker = get_breaker("search")
    for _ in range(5):
        _fail(breaker)
    with pytest.raises(CircuitOpenError):
        _ok(breaker)


def test_health_stops_calling_a_service_whose_circuit_is_open(
    shared: redis.Redis, clean_env: pytest.MonkeyPatch
) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from underlay import health

    hits: list[str] = []

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    clean_env.setenv("UNDERLAY_HEALTH__CACHE_SECONDS", "0")
    clean_env.setenv(
        "UNDERLAY_HEALTH__EXTERNAL_SERVICES",
        json.dumps([{"name": "payments", "url": f"http://127.0.0.1:{server.server_port}/health"}]),
    )
    from underlay.settings import reset_settings

    reset_settings()
    try:
        for _ in range(5):
            checks = health.run_checks(["services"]).checks
            assert [(c.measurement, c.status, c.output) for c, _ in checks] == [
                ("responseTime", "fail", "HTTP 503")
            ]
        report = health.run_checks(["services"])
    finally:
        server.shutdown()
    assert len(hits) == 5  # the sixth check did not call
    ((check, _),) = report.checks
    assert (check.component, check.measurement, check.status, check.observed_value) == (
        "http:payments",
        "circuit",
        "fail",
        "open",
    )
    assert report.status == "warn"  # not critical: degraded
    with pytest.raises(CircuitOpenError):  # the app's own calls share the circuit
        get_breaker("payments").call(lambda: None)
