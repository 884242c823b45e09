"""`@benchmark` registers a function returning flat `{"key": number}` figures; `__main__` runs them all."""

from __future__ import annotations

from collections.abc import Callable

Figures = dict[str, float]
BENCHMARKS: dict[str, Callable[[], Figures]] = {}


def benchmark(name: str) -> Callable[[Callable[[], Figures]], Callable[[], Figures]]:
    def register(fn: Callable[[], Figures]) -> Callable[[], Figures]:
        BENCHMARKS[name] = fn
        return fn

    return register
