"""The CDK app: `npx cdk synth -c stage=dev` (`make synth STAGE=dev`), run from the repo root.

Context:
  stage        dev | staging | prod; default `$UNDERLAY_STAGE`, else dev. Reads infra/stages/<stage>.json.
  stage_file   any stage config file instead (tests, a one-off account).
  release_id   what health reports as `releaseId` (CI passes the commit); default the project version.

An invalid stage config prints every bad field to stderr and exits 2, before anything is synthesized.
Every synth runs the cdk-nag AwsSolutions checks; an unacknowledged finding fails it.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts infra/ itself first on sys.path, where infra/constructs/ would shadow the
# `constructs` library. The repo root (for `infra.*`) and the layer source (for `underlay`) go first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "infra"]
for _path in (REPO / "layers" / "underlay", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

if TYPE_CHECKING:
    import aws_cdk as cdk

    from infra.stack import UnderlayStack


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def add_nag_checks(app: cdk.App) -> None:
    """Run cdk-nag's AwsSolutions pack on every synth; an unacknowledged finding fails it."""
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def build_app(
    *, context: dict[str, object] | None = None, outdir: str | None = None, nag: bool = True
) -> tuple[cdk.App, UnderlayStack]:
    """The app and its one stack. Raises `StageConfigError` for an unusable stage config.

    `nag=False` is for tests, which run the checks themselves to report findings instead of failing synth.
    """
    import aws_cdk as cdk

    from infra.layer_build import build_functions, build_layer
    from infra.stack import UnderlayStack
    from infra.stage_config import load_stage_config, stage_file

    # The feature flags in cdk.json, for runs that do not come through the CLI (tests); the CLI's own context
    # still wins, as `App` gives it precedence over this argument.
    flags = json.loads((REPO / "cdk.json").read_text()).get("context", {})
    app = cdk.App(context={**flags, **(context or {})}, outdir=outdir)
    requested = app.node.try_get_context("stage")
    explicit_file = app.node.try_get_context("stage_file")
    if explicit_file:
        config = load_stage_config(Path(str(explicit_file)), expected_stage=requested)
    else:
        stage = str(requested or os.environ.get("UNDERLAY_STAGE") or "dev")
        config = load_stage_config(stage_file(stage), expected_stage=stage)

    version = project_version()
    env = cdk.Environment(account=config.account, region=config.region) if config.account else None
    stack = UnderlayStack(
        app,
        f"Underlay-{config.stage}",
        config=config,
        version=version,
        release_id=str(app.node.try_get_context("release_id") or version),
        layer_dir=build_layer(),
        code_dir=build_functions(),
        env=env,
    )
    if nag:
        add_nag_checks(app)
    return app, stack


def main() -> int:
    from infra.stage_config import StageConfigError

    try:
        app, _ = build_app()
    except StageConfigError as exc:
        print(f"synth failed: {exc}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
