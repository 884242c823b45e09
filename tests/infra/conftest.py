"""One synth of `Underlay-dev` per session (an App costs seconds), shared by every infra test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault(
    "JSII_RUNTIME_PACKAGE_CACHE_ROOT", str(Path(__file__).resolve().parents[2] / ".cache" / "jsii")
)

STAGE = "dev"


@dataclass(frozen=True)
class Synth:
    stack: Any  # infra.stack.UnderlayStack
    template: dict[str, Any]  # the CloudFormation template as JSON
    nag_violations: list[str]  # unacknowledged cdk-nag AwsSolutions findings, one line each
    config: Any  # infra.stage_config.StageConfig

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == type_}

    def props(self, logical_id: str) -> dict[str, Any]:
        return dict(self.template["Resources"][logical_id].get("Properties", {}))

    def logical_id(self, construct: Any) -> str:
        """The logical ID of an L2 construct's CloudFormation resource (or of an L1 itself)."""
        from aws_cdk import CfnElement

        element = construct if isinstance(construct, CfnElement) else construct.node.default_child
        return str(self.stack.get_logical_id(element))


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from infra.app import build_app
    from infra.stage_config import load_stage_config, stage_file

    # nag=False: the checks run below and report their findings in one test, instead of failing the synth
    # that every test here needs.
    _, stack = build_app(context={"stage": STAGE}, outdir=str(tmp_path_factory.mktemp("cdk.out")), nag=False)
    template = Template.from_stack(stack).to_json()
    report = AwsSolutionsChecks().validate_scope(stack)
    violations = [
        f"{v.rule_name}: {v.description} ({len(v.violating_resources)} resource(s))"
        for v in report.violations
    ]
    yield Synth(stack, template, violations, load_stage_config(stage_file(STAGE)))


def ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def get_att(logical_id: str, attribute: str = "Arn") -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
