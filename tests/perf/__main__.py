"""`make bench`: run every registered benchmark, print one JSON object last, write .bench/results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.perf import cold_start  # noqa: F401  (registers)
from tests.perf.registry import BENCHMARKS

TARGETS = {
    "cold_init_ms.authorizer": ("<=", 150.0),
    "cold_init_ratio.health_vs_reference": ("<=", 1.2),
}


def main() -> int:
    results: dict[str, float] = {}
    for name, run in BENCHMARKS.items():
        print(f"{name}:", file=sys.stderr)
        results.update(run())
    for key, (_, limit) in TARGETS.items():
        verdict = "PASS" if results[key] <= limit else "MISS"
        print(f"  target {key} <= {limit}: {results[key]} {verdict}", file=sys.stderr)
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    line = json.dumps(results, sort_keys=True)
    (out / "results.json").write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
