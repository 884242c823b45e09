"""`make bench`: run every registered benchmark, check targets, print one JSON object as the last stdout line.

The same object goes to `.bench/results.json`. Targets print PASS/MISS and never fail the run; a benchmark that
crashes is reported, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from tests.perf.registry import BENCHMARKS, Figures

REPO = Path(__file__).resolve().parents[2]
# Every module in tests/perf registers its benchmarks on import; a domain adds `tests/perf/<domain>.py`.
MODULES = tuple(
    f"tests.perf.{p.stem}"
    for p in sorted(Path(__file__).parent.glob("*.py"))
    if p.stem not in ("__init__", "__main__", "registry")
)


def main() -> int:
    for module in MODULES:
        importlib.import_module(module)
    results: Figures = {}
    failed: list[str] = []
    for bench in BENCHMARKS.values():
        print(f"{bench.name}:", file=sys.stderr)
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the final JSON line
                figures = bench.run()
        except Exception:
            traceback.print_exc(file=sys.stderr)
            failed.append(bench.name)
            continue
        clash = results.keys() & figures.keys()
        if clash:
            print(f"  ERROR: {bench.name} repeats keys {sorted(clash)}", file=sys.stderr)
            failed.append(bench.name)
        results.update(figures)
        print(f"  ({time.perf_counter() - started:.1f} s)", file=sys.stderr)

    print("targets:", file=sys.stderr)
    for bench in BENCHMARKS.values():
        for target in bench.targets:
            value = results.get(target.key)
            verdict = "n/a" if value is None else ("PASS" if target.met(value) else "MISS")
            print(f"  {target.key} {target.op} {target.limit:g}: {value} {verdict}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)

    line = json.dumps(results, sort_keys=True)
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(line + "\n")
    sys.stderr.flush()
    print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
