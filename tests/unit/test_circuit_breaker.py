"""The circuit breaker in front of Redis: opens after N consecutive failures, lets one probe through after the
cool-down, closes on a good probe and reopens on a bad one."""

from __future__ import annotations

import threading

from underlay.redis_client import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    opened: list[tuple[int, str]] = []
    breaker = CircuitBreaker(3, 30, clock=Clock(), on_open=lambda n, e: opened.append((n, e)))
    breaker.failure(ConnectionError())
    breaker.failure(ConnectionError())
    breaker.success()  # a success in between resets the count
    breaker.failure(ConnectionError())
    breaker.failure(ConnectionError())
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure(TimeoutError())
    assert breaker.state == "open" and not breaker.allow()
    assert opened == [(3, "TimeoutError")] and breaker.times_opened == 1


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 30, clock=clock)
    breaker.failure()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state == "half_open"
    allowed = []
    threads = [threading.Thread(target=lambda: allowed.append(breaker.allow())) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1


def test_a_good_probe_closes_and_a_bad_one_reopens() -> None:
    clock = Clock()
    opened: list[int] = []
    breaker = CircuitBreaker(2, 10, clock=clock, on_open=lambda n, _: opened.append(n))
    breaker.failure()
    breaker.failure()
    clock.now += 10
    assert breaker.allow()
    breaker.failure()  # the probe failed: open again for a full cool-down, without a second "opened" signal
    assert breaker.state == "open" and opened == [2]
    clock.now += 10
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_a_probe_that_never_reports_back_does_not_stick_half_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.failure()
    clock.now += 10
    assert breaker.allow()  # the probe; its caller then raises something else and never reports
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow()  # another probe, after a cool-down
