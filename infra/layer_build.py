"""Stage the layer and function code without Docker: pip `--platform` for arm64/3.12, hashed to skip rebuilds."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / ".build"
EXCLUDED = {"boto3", "botocore", "s3transfer", "jmespath"}  # the Lambda runtime ships these
Runner = Callable[[list[str]], None]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def runtime_requirements() -> list[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[name.lower().replace("_", "-")] = version
    wanted = []
    for dep in deps:
        name = re.split(r"[\[<>=!~ ]", dep, maxsplit=1)[0].lower()
        if name in EXCLUDED:
            continue
        extras = dep[len(name) :].split("]")[0] + "]" if dep[len(name) :].startswith("[") else ""
        wanted.append(f"{name}{extras}=={pins[name]}" if name in pins else dep)
    return sorted(wanted)


def _digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for root in paths:
        for file in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(file.relative_to(REPO)).encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def build_layer(run: Runner = _run) -> Path:
    """`.build/layer/python/` = the `underlay` package + its dependencies for python3.12 on arm64."""
    target = BUILD / "layer"
    source = REPO / "layers" / "underlay" / "underlay"
    requirements = runtime_requirements()
    digest = _digest([source], "\n".join(requirements))
    stamp = target / ".hash"
    if stamp.exists() and stamp.read_text() == digest:
        return target
    shutil.rmtree(target, ignore_errors=True)
    site = target / "python"
    site.mkdir(parents=True)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--upgrade",
            "--platform",
            "manylinux2014_aarch64",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--target",
            str(site),
            *requirements,
        ]
    )
    for name in EXCLUDED:
        for found in site.glob(f"{name}*"):
            shutil.rmtree(found, ignore_errors=True)
    shutil.copytree(source, site / "underlay", ignore=shutil.ignore_patterns("__pycache__"))
    stamp.write_text(digest)
    return target


def build_functions() -> Path:
    """`.build/functions/functions/...`: every handler, so `functions.<name>.app.handler` resolves."""
    target = BUILD / "functions"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        REPO / "functions", target / "functions", ignore=shutil.ignore_patterns("__pycache__", "tests")
    )
    return target
