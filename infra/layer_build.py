"""Stage the Lambda layer and the function code as plain directories for `Code.from_asset`, with no Docker.

The layer's third-party packages come from `pip install --platform ... --only-binary=:all: --target`, which
fetches the cp312/aarch64 wheels Lambda needs from any host. That step is the slow one (tens of seconds), so
it is keyed by a hash of its inputs (the `[project] dependencies`, requirements.lock and the pip arguments) and
skipped when the hash is unchanged. The `underlay` package itself is copied on every build: it is small, and a
copy is how an edit reaches the next synth.

    .build/layer/python/...           the layer (Lambda puts /opt/python on sys.path)
    .build/layer/.deps-hash           hash of the inputs of the pip step
    .build/functions/functions/...    the `functions` package; handler `functions.<name>.app.handler`
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / ".build"
LAYER_SOURCE = Path("layers") / "underlay" / "underlay"

PYTHON_VERSION = "3.12"
# manylinux2014 is what most aarch64 wheels are tagged with; manylinux_2_28 admits the wheels that dropped
# glibc 2.17. The python3.12 runtime is Amazon Linux 2023 (glibc 2.34), so both load.
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64")
# The Lambda runtime ships boto3 and botocore. Bundling them would add ~25 MB and pin an older copy.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer"})
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "tests", ".pytest_cache", ".mypy_cache")

Runner = Callable[[Sequence[str]], None]


def _run(cmd: Sequence[str]) -> None:
    subprocess.run(list(cmd), check=True)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(repo: Path = REPO) -> list[str]:
    """`[project] dependencies` minus what the runtime ships, e.g. `pydantic>=2.11,<3`."""
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    kept = []
    for dep in deps:
        name = re.split(r"[\[<>=!~;\s]", dep, maxsplit=1)[0]
        if _normalise(name) not in RUNTIME_PROVIDED:
            kept.append(dep)
    return sorted(kept)


def pip_command(target: Path, requirements: Sequence[str], constraints: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += [
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--target",
        str(target),
    ]
    if constraints is not None:
        cmd += ["-c", str(constraints)]  # the lock pins every version it knows, transitive ones included
    return [*cmd, *requirements]


def _hash_files(root: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def deps_hash(repo: Path = REPO) -> str:
    """The key of the pip step: the requirements, the lock and the pip arguments."""
    lock = repo / "requirements.lock"
    digest = hashlib.sha256()
    for part in (
        "\n".join(runtime_requirements(repo)),
        lock.read_text() if lock.exists() else "",
        " ".join(pip_command(Path("TARGET"), [], None)[1:]),  # minus the interpreter path
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def build_layer(*, repo: Path = REPO, build_dir: Path = BUILD, run: Runner = _run) -> Path:
    """Stage the layer at `<build_dir>/layer` and return it. pip runs only when `deps_hash` changed."""
    layer = build_dir / "layer"
    site = layer / "python"
    stamp = layer / ".deps-hash"
    wanted = deps_hash(repo)
    if not (stamp.exists() and stamp.read_text() == wanted and site.is_dir()):
        # Install into a scratch directory and swap it in, so an interrupted pip never leaves a layer whose
        # stamp claims it is complete.
        scratch = build_dir / f"layer.tmp-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        (scratch / "python").mkdir(parents=True)
        lock = repo / "requirements.lock"
        run(pip_command(scratch / "python", runtime_requirements(repo), lock if lock.exists() else None))
        installed = scratch / "python"
        shutil.rmtree(installed / "bin", ignore_errors=True)  # console scripts: nothing on Lambda runs them
        for name in RUNTIME_PROVIDED:  # in case a dependency pulled one in transitively
            for found in [installed / name, *installed.glob(f"{name}-*.dist-info")]:
                shutil.rmtree(found, ignore_errors=True)
        (scratch / ".deps-hash").write_text(wanted)
        shutil.rmtree(layer, ignore_errors=True)
        scratch.rename(layer)
    package = site / "underlay"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(repo / LAYER_SOURCE, package, ignore=IGNORED)
    return layer


def build_functions(*, repo: Path = REPO, build_dir: Path = BUILD) -> Path:
    """Stage `<build_dir>/functions/functions/` (every handler package, no tests or caches) and return the root."""
    root = build_dir / "functions"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(repo / "functions", root / "functions", ignore=IGNORED)
    return root


def main() -> int:
    """`python -m infra.layer_build`: stage both assets and print where they are."""
    print(build_layer())
    print(build_functions())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
