"""cdk-nag (AwsSolutions) and cfn-lint pass on the synthesized template; every acknowledgment says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import Validations

from tests.infra.conftest import Synth


def test_no_unacknowledged_cdk_nag_findings(synth: Synth) -> None:
    assert synth.nag_violations == [], "\n".join(synth.nag_violations)


def test_synth_fails_on_a_finding(tmp_path: Path) -> None:
    """The app's synth runs the same checks: one unacknowledged finding stops it."""
    import aws_cdk as cdk
    from aws_cdk import aws_sqs as sqs

    from infra.app import add_nag_checks

    app = cdk.App(outdir=str(tmp_path))
    sqs.Queue(cdk.Stack(app, "Findings"), "NoDlqNoTls")
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match=r"ValidationFailed(.|\n)*AwsSolutions-SQS4"):
        app.synth()


def test_every_acknowledged_finding_carries_a_specific_reason(synth: Synth) -> None:
    acknowledged = []
    for construct in synth.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                continue
            for rule, reason in entry.data.items():
                if "AwsSolutions-" in rule:
                    acknowledged.append(rule)
                    assert len(reason.split()) >= 8, (
                        f"{construct.node.path} {rule}: reason too thin: {reason!r}"
                    )
    assert acknowledged, "expected the public routes at least to be acknowledged"


def test_cfn_lint_is_clean(synth: Synth, tmp_path: Path) -> None:
    template = tmp_path / "Underlay-dev.template.json"
    template.write_text(json.dumps(synth.template))
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), str(template), "-i", "W3005"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
