"""Stage config: the shipped files validate; a bad one names every bad field and fails synth without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.stage_config import STAGES_DIR, StageConfigError, load_stage_config, stage_file

REPO = Path(__file__).resolve().parents[2]
BAD = {
    "stage": "moon",
    "api": {"throttle_rate": 0, "throttle_burst": -5, "cors_origins": ["ftp://example.com"]},
    "auth": {"issuer": "https://issuer.example.com/", "audience": "underlay", "jwks_url": "http://plain"},
    "redis": {"node_type": "t4g.micro", "replicas": 9},
    "log_retention_days": 13,
    "removal_policy": "keep",
    "audit_retention_days": 0,
    "alarms": {"email": "not-an-email", "queue_depth": 0},
    "email": {"from_address": "Underlay <no-reply@example.com>", "from_name": "two\nlines"},
    "tracin": True,
    # Layer 2 of the runtime configuration: the same schema as the functions, secrets refused.
    "settings": {
        "cache": {"default_ttl_seconds": 0},
        "ratelimit": {"tiers": {"free": {"limit": 0}}},
        "http": {"cursor_secret": "in-a-file"},
        "nope": {"x": 1},
    },
}
BAD_FIELDS = (
    "stage",
    "api.throttle_rate",
    "api.throttle_burst",
    "api.cors_origins",
    "auth.jwks_url",
    "redis.node_type",
    "redis.replicas",
    "log_retention_days",
    "removal_policy",
    "audit_retention_days",
    "alarms.email",
    "alarms.queue_depth",
    "email.from_address",
    "email.from_name",
    "tracin",
    "settings.http.cursor_secret",
    "settings.nope.x",
)


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(BAD))
    return path


@pytest.mark.parametrize("stage", sorted(p.stem for p in STAGES_DIR.glob("*.json")))
def test_shipped_stage_files_are_valid(stage: str) -> None:
    config = load_stage_config(stage_file(stage), expected_stage=stage)
    assert config.stage == stage


def test_prod_keeps_data_and_dev_stays_cheap() -> None:
    prod, dev = load_stage_config(stage_file("prod")), load_stage_config(stage_file("dev"))
    assert prod.removal_policy == "retain" and prod.redis.replicas >= 1
    assert dev.network.nat_gateways == 0


def test_an_invalid_file_names_every_bad_field(bad_file: Path) -> None:
    with pytest.raises(StageConfigError) as caught:
        load_stage_config(bad_file)
    message = str(caught.value)
    assert message.startswith(f"stage config {bad_file} is invalid:\n")
    named = {line.split(":", 1)[0].strip() for line in message.splitlines()[1:]}
    assert named == set(BAD_FIELDS)
    assert "api.throttle_rate: Input should be greater than 0" in message


def test_missing_and_malformed_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(StageConfigError, match=r"does not exist \(known stages: dev, prod"):
        load_stage_config(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(StageConfigError, match="is not valid JSON"):
        load_stage_config(broken)


def test_a_file_for_another_stage_is_refused() -> None:
    with pytest.raises(StageConfigError, match="stage: file says 'dev' but 'prod' was requested"):
        load_stage_config(stage_file("dev"), expected_stage="prod")


def test_synth_with_a_bad_stage_file_exits_2_naming_the_fields_without_a_traceback(bad_file: Path) -> None:
    # CDK_CONTEXT_JSON is how the CDK CLI hands `-c key=value` to the app.
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({"stage_file": str(bad_file)})}
    result = subprocess.run(
        [sys.executable, "infra/app.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"stage config {bad_file} is invalid:" in result.stderr
    for field in BAD_FIELDS:
        assert f"  {field}: " in result.stderr, field


def test_stage_settings_are_checked_against_the_functions_schema(tmp_path: Path) -> None:
    document = json.loads(stage_file("dev").read_text())
    document["settings"] = {
        "cache": {"default_ttl_seconds": 0},
        "ratelimit": {"tiers": {"free": {"limit": 0}}},
    }
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(document))
    with pytest.raises(StageConfigError) as caught:
        load_stage_config(path)
    assert str(caught.value).splitlines()[1:] == [
        "  settings.cache.default_ttl_seconds: Input should be greater than or equal to 1",
        "  settings.ratelimit.tiers.free.limit: Input should be greater than or equal to 1",
    ]


def test_the_stage_settings_document_carries_cors_and_tracing() -> None:
    config = load_stage_config(stage_file("prod"))
    document = json.loads(config.settings_json())
    assert document["http"]["cors_origins"] == config.api.cors_origins
    assert document["observability"]["tracing_enabled"] is config.tracing


def test_stage_settings_refuse_what_cdk_wires_and_a_partial_sentry_arn(tmp_path: Path) -> None:
    document = json.loads(stage_file("dev").read_text())
    document["settings"] = {
        "observability": {
            "metrics_namespace": "Shop",
            "sentry_dsn_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sentry",
        },
        "tables": {"flags": "x"},
    }
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(document))
    with pytest.raises(StageConfigError) as caught:
        load_stage_config(path)
    named = [line.split(":", 1)[0].strip() for line in str(caught.value).splitlines()[1:]]
    assert named == [
        "settings.observability.metrics_namespace",
        "settings.tables",
        "settings.observability.sentry_dsn_secret_arn",
    ]
    document["settings"] = {
        "observability": {
            "sentry_dsn_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sentry-AbC123"
        }
    }
    path.write_text(json.dumps(document))
    assert load_stage_config(path).settings["observability"]["sentry_dsn_secret_arn"].endswith("-AbC123")
