"""Benchmarks for `make bench` (`python -m tests.perf`).

Each module registers figures with `@benchmark` (see `registry`); `__main__` runs them all side by side in one
run. No pytest files live here: timings are measurements, not assertions, and `make test` never collects them.
"""
