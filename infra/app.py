"""The CDK app: `cdk synth -c stage=dev` (or `make synth STAGE=dev`). Invalid stage config exits 2, naming each field."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts infra/ first on sys.path; the repo root must come first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "infra"]
for path in (REPO, REPO / "layers" / "underlay"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def build_app(stage: str | None = None, stage_file: str | None = None) -> tuple[object, object]:
    import aws_cdk as cdk

    from infra.stack import UnderlayStack
    from infra.stage_config import STAGES_DIR, load_stage_config

    app = cdk.App()
    stage = stage or app.node.try_get_context("stage") or os.environ.get("UNDERLAY_STAGE", "dev")
    stage_file = stage_file or app.node.try_get_context("stage_file") or str(STAGES_DIR / f"{stage}.json")
    config = load_stage_config(Path(stage_file))
    env = cdk.Environment(account=config.account, region=config.region) if config.account else None
    stack = UnderlayStack(app, f"Underlay-{config.stage}", config=config, version="0.1.0", env=env)
    return app, stack


def main() -> int:
    from infra.stage_config import StageConfigError

    try:
        app, _ = build_app()
    except StageConfigError as exc:
        print(f"synth failed: {exc}", file=sys.stderr)
        return 2
    app.synth()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
