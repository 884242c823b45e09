"""One synth of `Underlay-dev` per session (an App costs seconds), shared by every infra test."""

from __future__ import annotations

import json
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


def all_statements(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    """(owner logical ID, statement) for every identity policy statement in the template."""
    found = []
    for logical_id, policy in synth.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            found.append((logical_id, statement))
    for logical_id, role in synth.resources("AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            for statement in inline["PolicyDocument"]["Statement"]:
                found.append((logical_id, statement))
    return found


def role_statements(synth: Synth, function: str) -> list[dict[str, Any]]:
    """Every statement of a declared function's role (its default policy)."""
    fn = synth.props(synth.logical_id(synth.stack.functions.functions[function]))
    role_id = fn["Role"]["Fn::GetAtt"][0]
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def allowed(statements: list[dict[str, Any]], prefix: str) -> dict[str, set[str]]:
    """action -> the resources (as JSON) it is allowed on, for actions of one service."""
    found: dict[str, set[str]] = {}
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        for action in as_list(statement["Action"]):
            if action.startswith(prefix):
                found.setdefault(action, set()).update(
                    json.dumps(r, sort_keys=True) for r in as_list(statement["Resource"])
                )
    return found


def beyond_config(synth: Synth, found: dict[str, set[str]]) -> dict[str, set[str]]:
    """`allowed(..., "dynamodb:")` without the config table, which every function but the authorizer reads."""
    config = arn(synth, synth.stack.data.tables["config"])
    trimmed = {action: resources - {config} for action, resources in found.items()}
    return {action: resources for action, resources in trimmed.items() if resources}


def arn(synth: Synth, construct: Any, attribute: str = "Arn") -> str:
    """A construct's `Fn::GetAtt` as `allowed` renders resources."""
    return json.dumps(get_att(synth.logical_id(construct), attribute), sort_keys=True)


def index_arns(synth: Synth, table: Any) -> str:
    """`<table ARN>/index/*` as CDK's table grants render it."""
    return json.dumps({"Fn::Join": ["", [get_att(synth.logical_id(table)), "/index/*"]]}, sort_keys=True)
