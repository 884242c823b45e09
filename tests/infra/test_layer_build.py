"""The Docker-free layer build: the pip invocation, the hash that skips it, and what lands in the assets."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from infra import layer_build
from tests.infra.conftest import Synth

REPO = Path(__file__).resolve().parents[2]


class RecordingPip:
    """Stands in for pip: records each call and installs one fake package into `--target`."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str]) -> None:
        self.calls.append(list(cmd))
        target = Path(cmd[cmd.index("--target") + 1])
        (target / "fakepkg").mkdir(parents=True)
        (target / "fakepkg" / "__init__.py").write_text("")
        (target / "bin").mkdir()  # console scripts pip would leave behind


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A minimal copy of the inputs: pyproject, the lock and the underlay sources."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, root / name)
    source = root / layer_build.LAYER_SOURCE
    source.mkdir(parents=True)
    (source / "declaration.py").write_text("ROUTES = ()\n")
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "declaration.cpython-312.pyc").write_bytes(b"")
    return root


def test_requirements_are_the_project_dependencies_minus_what_lambda_ships() -> None:
    requirements = layer_build.runtime_requirements()
    names = {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].lower() for r in requirements}
    assert "boto3" not in names and "botocore" not in names
    assert {"aws-lambda-powertools", "pydantic", "pyjwt", "redis", "sentry-sdk"} <= names


def test_pip_targets_cp312_aarch64_wheels_pinned_by_the_lock(tmp_path: Path) -> None:
    cmd = layer_build.pip_command(tmp_path, ["pydantic>=2"], REPO / "requirements.lock")
    joined = " ".join(cmd)
    assert cmd[:4] == [layer_build.sys.executable, "-m", "pip", "install"]
    assert "--platform manylinux2014_aarch64" in joined
    assert "--only-binary=:all:" in cmd
    assert "--python-version 3.12" in joined and "--implementation cp" in joined
    assert f"--target {tmp_path}" in joined
    assert f"-c {REPO / 'requirements.lock'}" in joined
    assert cmd[-1] == "pydantic>=2"


def test_unchanged_inputs_skip_pip_and_still_refresh_the_package(repo: Path, tmp_path: Path) -> None:
    pip, build = RecordingPip(), tmp_path / "build"
    layer = layer_build.build_layer(repo=repo, build_dir=build, run=pip)
    assert len(pip.calls) == 1
    site = layer / "python"
    assert (site / "fakepkg" / "__init__.py").exists()
    assert not (site / "bin").exists()
    assert (site / "underlay" / "declaration.py").read_text() == "ROUTES = ()\n"
    assert not (site / "underlay" / "__pycache__").exists()
    assert (layer / ".deps-hash").read_text() == layer_build.deps_hash(repo)

    (repo / layer_build.LAYER_SOURCE / "declaration.py").write_text("ROUTES = ('changed',)\n")
    layer_build.build_layer(repo=repo, build_dir=build, run=pip)
    assert len(pip.calls) == 1, "pip ran again although no dependency input changed"
    assert (site / "underlay" / "declaration.py").read_text() == "ROUTES = ('changed',)\n"
    assert (site / "fakepkg").exists()


def test_a_changed_lock_reinstalls(repo: Path, tmp_path: Path) -> None:
    pip, build = RecordingPip(), tmp_path / "build"
    layer_build.build_layer(repo=repo, build_dir=build, run=pip)
    with (repo / "requirements.lock").open("a") as lock:
        lock.write("extra-package==1.0\n")
    layer_build.build_layer(repo=repo, build_dir=build, run=pip)
    assert len(pip.calls) == 2


def test_a_failed_pip_leaves_no_layer_that_claims_to_be_complete(repo: Path, tmp_path: Path) -> None:
    def failing(cmd: Sequence[str]) -> None:
        raise RuntimeError("no network")

    build = tmp_path / "build"
    with pytest.raises(RuntimeError):
        layer_build.build_layer(repo=repo, build_dir=build, run=failing)
    assert not (build / "layer" / ".deps-hash").exists()
    pip = RecordingPip()
    layer_build.build_layer(repo=repo, build_dir=build, run=pip)
    assert len(pip.calls) == 1


def test_function_code_is_the_functions_package_without_caches(tmp_path: Path) -> None:
    root = layer_build.build_functions(build_dir=tmp_path)
    staged = root / "functions"
    assert (staged / "__init__.py").exists()
    assert not list(staged.rglob("__pycache__")) and not list(staged.rglob("*.pyc"))
    expected = {p.name for p in (REPO / "functions").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert {p.name for p in staged.iterdir() if p.is_dir()} == expected


def test_the_synthesized_layer_holds_underlay_and_aarch64_wheels(synth: Synth) -> None:
    site = layer_build.BUILD / "layer" / "python"
    assert (site / "underlay" / "declaration.py").exists()
    assert list(site.glob("pydantic_core/*cpython-312-aarch64-linux-gnu.so"))
    assert not (site / "boto3").exists() and not (site / "botocore").exists()
