"""The benchmark registry.

A benchmark is a function returning flat figures, `{"dotted.key": number}`, registered with `@benchmark(name)`;
it may declare targets that `__main__` checks (PASS/MISS, never a failing exit). To add one: write a module in
`tests/perf`, decorate its function, and add the module to `MODULES` in `__main__`. Benchmarks print what they
like to stderr (`row` prints a table line); stdout belongs to the final JSON line.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Figures = dict[str, float]
Benchmark = Callable[[], Figures]


@dataclass(frozen=True)
class Target:
    key: str
    op: Literal["<=", ">="]
    limit: float

    def met(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit


@dataclass(frozen=True)
class Registered:
    name: str
    run: Benchmark
    targets: tuple[Target, ...]


BENCHMARKS: dict[str, Registered] = {}


def benchmark(name: str, *, targets: Sequence[Target] = ()) -> Callable[[Benchmark], Benchmark]:
    def register(fn: Benchmark) -> Benchmark:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        BENCHMARKS[name] = Registered(name, fn, tuple(targets))
        return fn

    return register


def header(unit: str = "ms") -> None:
    print(f"  {'name':<24} {'median':>10} {'min':>10} {'max':>10}  ({unit})", file=sys.stderr)


def row(name: str, samples: Sequence[float]) -> None:
    median = statistics.median(samples)
    print(f"  {name:<24} {median:>10.1f} {min(samples):>10.1f} {max(samples):>10.1f}", file=sys.stderr)
