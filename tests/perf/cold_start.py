"""`cold_init_ms.<function>`: import plus init of each handler in a fresh interpreter, median of runs.

The runs interleave (authorizer, health, reference, authorizer, ...) so machine noise hits all three alike.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from tests.perf.registry import Figures, benchmark

REPO = Path(__file__).resolve().parents[2]
RUNS = 9

PROGRAMS = {
    "authorizer": "import functions.authorizer.app\nfrom underlay.auth import verifier\nverifier()",
    "health": (
        "import functions.health.app\nfrom underlay.settings import get_settings\nget_settings()\n"
        "from underlay.observability import get_logger\nget_logger()"
    ),
    "reference": (
        "from aws_lambda_powertools.event_handler import APIGatewayHttpResolver\nimport boto3\n"
        "app = APIGatewayHttpResolver()\nboto3.client('dynamodb', region_name='us-east-1')"
    ),
}


def _child(body: str) -> str:
    return (
        f"import sys, time\nsys.path.insert(0, {str(REPO)!r})\nt0 = time.perf_counter()\n{body}\n"
        "print((time.perf_counter() - t0) * 1000)"
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERLAY_")}
    env.update(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "UNDERLAY_STAGE": "dev",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )
    return env


@benchmark("cold_start")
def cold_start() -> Figures:
    samples: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    env = _env()
    for body in PROGRAMS.values():  # one warm-up each: .pyc files, page cache
        subprocess.run(
            [sys.executable, "-c", _child(body)], env=env, check=True, capture_output=True, cwd=REPO
        )
    for _ in range(RUNS):
        for name, body in PROGRAMS.items():
            out = subprocess.run(
                [sys.executable, "-c", _child(body)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                cwd=REPO,
            ).stdout
            samples[name].append(float(out.strip().splitlines()[-1]))
    figures = {
        f"cold_init_ms.{name}": round(statistics.median(values), 1) for name, values in samples.items()
    }
    figures["cold_init_ratio.health_vs_reference"] = round(
        figures["cold_init_ms.health"] / figures["cold_init_ms.reference"], 3
    )
    for name, values in samples.items():
        print(
            f"  {name:<11} median {statistics.median(values):7.1f} ms  min {min(values):7.1f}  max {max(values):7.1f}",
            file=sys.stderr,
        )
    return figures
