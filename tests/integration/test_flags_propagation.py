"""A write through the API reaches another process's evaluations within the refresh interval (moto server, so
two processes share one DynamoDB; the session's real Redis carries the stamp)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import REPO

CHILD = """
import json, time
from underlay import flags
client = flags.client()
assert client.evaluate("propagate", {"sub": "u1"}).value is False
print("ready", flush=True)
deadline = time.time() + 20  # never hang the suite: a change never seen reports a 20 s lag
while time.time() < deadline and client.evaluate("propagate", {"sub": "u1"}).value is not True:
    time.sleep(0.02)
print(json.dumps({"seen_at": time.time()}), flush=True)
"""


@pytest.fixture
def moto_env(moto_server: dict[str, str], clean_env: pytest.MonkeyPatch) -> dict[str, str]:
    clean_env.setenv("UNDERLAY_FLAGS__REFRESH_SECONDS", "0.5")
    return {**moto_server, "UNDERLAY_FLAGS__REFRESH_SECONDS": "0.5"}


def _next_output(stream: Any) -> str:
    """The child's next line that is not one of its JSON log records."""
    for line in stream:
        if '"level":' not in line:
            return str(line).strip()
    return ""


def test_a_toggle_reaches_another_process_within_the_refresh_interval(moto_env: dict[str, str]) -> None:
    from underlay.flags import service
    from underlay.flags.model import FlagSpec

    service.create(
        FlagSpec(key="propagate", type="boolean", enabled=False, default=False, rollout={"percentage": 100}),
        "test",
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'layers' / 'underlay'}"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert _next_output(child.stdout) == "ready"  # the child holds a snapshot with the flag off
        written = time.time()
        service.toggle("propagate", True, None, "test")
        line = _next_output(child.stdout)
        child.wait(timeout=15)
    finally:
        child.kill()
    lag = json.loads(line)["seen_at"] - written
    print(f"propagation: {lag * 1000:.0f} ms (refresh interval 500 ms)")
    assert 0 <= lag < 0.5 + 2.0  # the interval, plus a reload on a loaded machine
