"""Sentry through a transport that keeps envelopes in memory: what would be sent, without a network."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO, http_event

DSN = "https://publickey@o1.ingest.sentry.example/1"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlbnRyeQ"
SECRET = "db-pass-7f3a91"


class CapturingTransport:
    """A `sentry_sdk.transport.Transport` that records envelopes (built lazily: sentry_sdk is imported here)."""

    def __new__(cls) -> Any:
        from sentry_sdk.transport import Transport

        class _Capturing(Transport):
            def __init__(self) -> None:
                super().__init__()
                self.envelopes: list[Any] = []

            def capture_envelope(self, envelope: Any) -> None:
                self.envelopes.append(envelope)

            def events(self) -> list[dict[str, Any]]:
                return [item.payload.json for e in self.envelopes for item in e.items if item.type == "event"]

            def raw(self) -> str:
                return "".join(e.serialize().decode() for e in self.envelopes)

        return _Capturing()


@pytest.fixture
def sentry(clean_env: pytest.MonkeyPatch) -> Iterator[Any]:
    from underlay import sentry as module

    transport = CapturingTransport()
    clean_env.setenv("UNDERLAY_OBSERVABILITY__SENTRY_DSN", DSN)
    module.use_transport(transport)
    yield transport
    module.use_transport(None)


def _explode(monkeypatch: pytest.MonkeyPatch) -> None:
    from underlay import health

    def run_checks(*_: Any, **__: Any) -> Any:
        password = SECRET  # a local holding a secret: frame locals are not sent
        raise RuntimeError(f"upstream refused Bearer {TOKEN} (password={password})")

    monkeypatch.setattr(health, "run_checks", run_checks)


def _failing_request(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from functions.health.app import handler

    _explode(monkeypatch)
    event = http_event("GET", "/v1/health/details", scopes="platform:read", sub="alice")
    event["headers"] = {
        "authorization": f"Bearer {TOKEN}",
        "cookie": f"session={SECRET}",
        "x-correlation-id": "corr-sentry-1",
        "user-agent": "pytest",
    }
    return handler(event, None)


def test_an_unexpected_error_is_captured_once_with_tags(sentry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from underlay.sentry import flush

    response = _failing_request(monkeypatch)
    flush()
    assert response["statusCode"] == 500
    (event,) = sentry.events()
    assert event["tags"]["correlation_id"] == "corr-sentry-1"
    assert event["tags"]["route"] == "GET /v1/health/details" and event["tags"]["status"] == "500"
    assert event["environment"] == "dev" and event["release"] == "0.1.0"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["user"] == {"id": "alice"}
    assert event["contexts"]["request"]["headers"]["user-agent"] == "pytest"


def test_no_secret_or_token_reaches_sentry(sentry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from underlay.sentry import flush

    _failing_request(monkeypatch)
    flush()
    raw = sentry.raw()
    assert sentry.events() and "upstream refused" in raw
    assert TOKEN not in raw and TOKEN.split(".")[1] not in raw
    assert SECRET not in raw


def test_handled_errors_are_not_captured(sentry: Any) -> None:
    from underlay.sentry import flush

    from functions.health.app import handler

    handler(http_event("GET", "/v1/health/details"), None)  # 401
    handler(http_event("GET", "/v1/nope"), None)  # 404
    flush()
    assert sentry.events() == []


def test_capture_exception_outside_a_request_is_scrubbed_and_tagged(sentry: Any) -> None:
    from underlay import context
    from underlay.sentry import capture_exception, flush

    with context.bound(context.RequestContext(correlation_id="job-42", route="email.send")):
        try:
            raise ValueError(f"token={SECRET}")
        except ValueError as exc:
            assert capture_exception(exc, job_type="email.send") is not None
    flush()
    (event,) = sentry.events()
    assert event["tags"] == {
        "correlation_id": "job-42",
        "route": "email.send",
        "job_type": "email.send",
        "service": "underlay",
    }
    assert SECRET not in sentry.raw()


def test_traces_sample_rate_and_pii_come_from_config(sentry: Any, clean_env: pytest.MonkeyPatch) -> None:
    import sentry_sdk
    from underlay.sentry import init_sentry, reset_sentry
    from underlay.settings import reset_settings

    assert init_sentry()
    options = sentry_sdk.get_client().options
    assert options["traces_sample_rate"] == 0.1 and options["send_default_pii"] is False
    clean_env.setenv("UNDERLAY_OBSERVABILITY__SENTRY_TRACES_SAMPLE_RATE", "0.02")
    reset_settings()
    reset_sentry()
    assert init_sentry()
    assert sentry_sdk.get_client().options["traces_sample_rate"] == 0.02


def test_the_dsn_comes_from_secrets_manager(clean_env: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws
    from underlay import sentry as module

    transport = CapturingTransport()
    with mock_aws():
        arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="sentry-dsn", SecretString=json.dumps({"dsn": DSN})
        )["ARN"]
        clean_env.setenv("UNDERLAY_OBSERVABILITY__SENTRY_DSN_SECRET_ARN", arn)
        module.use_transport(transport)
        try:
            assert module.init_sentry()
            import sentry_sdk

            assert sentry_sdk.get_client().dsn == DSN
        finally:
            module.use_transport(None)


def test_an_unreadable_secret_disables_sentry_without_failing(clean_env: pytest.MonkeyPatch) -> None:
    from moto import mock_aws
    from underlay.sentry import init_sentry, reset_sentry

    clean_env.setenv(
        "UNDERLAY_OBSERVABILITY__SENTRY_DSN_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:nope"
    )
    reset_sentry()
    with mock_aws():
        assert init_sentry() is False


def test_without_a_dsn_sentry_is_never_imported() -> None:
    """A fresh interpreter serves requests, fails one, and captures: `sentry_sdk` stays unimported."""
    script = """
import sys
from tests.conftest import http_event
from functions.health.app import handler
from underlay import health
from underlay.sentry import capture_exception, init_sentry
handler(http_event("GET", "/v1/health/live"), None)
health.run_checks = lambda *a, **k: 1 / 0
assert handler(http_event("GET", "/v1/health"), None)["statusCode"] == 500
assert init_sentry() is False and capture_exception(RuntimeError("x")) is None
print("sentry_sdk" in sys.modules)
"""
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_METRICS_DISABLED": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def _logged(caplog: pytest.LogCaptureFixture, word: str) -> list[dict[str, Any]]:
    """Captured records whose message mentions `word`, with every attribute (the `extra` fields too)."""
    return [vars(r) for r in caplog.records if word in r.getMessage()]


def test_an_unreadable_secret_is_logged_by_type_and_code_only(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from moto import mock_aws
    from underlay.sentry import init_sentry, reset_sentry

    arn = "arn:aws:secretsmanager:us-east-1:1:secret:nope-4f2a"
    clean_env.setenv("UNDERLAY_OBSERVABILITY__SENTRY_DSN_SECRET_ARN", arn)
    reset_sentry()
    with mock_aws():
        assert init_sentry() is False
    (record,) = _logged(caplog, "sentry off")
    assert record["error"].isidentifier() and "nope-4f2a" not in json.dumps(record, default=str)


def test_invalid_settings_leave_sentry_off_without_a_log_line(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The pydantic error echoes input values; it is reported once, with field names, where it is raised."""
    from underlay.sentry import init_sentry, reset_sentry

    clean_env.setenv("UNDERLAY_OBSERVABILITY__SENTRY_DSN", DSN)
    clean_env.setenv("UNDERLAY_ADMIN__METRICS_TTL_DAYS", "-7319")
    reset_sentry()
    assert init_sentry() is False
    assert init_sentry() is False
    assert _logged(caplog, "sentry") == []


def test_record_failure_reaches_sentry_scrubbed_and_tagged(sentry: Any) -> None:
    """Subscriptions and the stream and SNS consumers report through `record_failure`, flushed before it returns."""
    from underlay import context
    from underlay.admin.recorder import record_failure

    with context.bound(context.RequestContext(correlation_id="evt-9", route="audit_archive")):
        try:
            raise RuntimeError(f"put failed (password={SECRET})")
        except RuntimeError as exc:
            record_failure("audit_archive", exc)
            record_failure("audit_archive", exc, report=False)  # a retry that is not the last: group only
    (event,) = sentry.events()  # sent already: record_failure flushes
    assert event["tags"]["source"] == "audit_archive" and event["tags"]["correlation_id"] == "evt-9"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert SECRET not in sentry.raw()
