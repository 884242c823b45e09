from __future__ import annotations

import json
import logging

import pytest
from underlay.observability import MAX_STACK_CHARS, REDACTED, _serialize, redact

pytestmark = pytest.mark.usefixtures("clean_env")


def test_sensitive_keys_are_redacted_at_any_depth() -> None:
    out = redact(
        {
            "Authorization": "Bearer abc.def.ghi",
            "nested": {"password": "p", "api_key": "k", "client_secret": "s", "refresh_token": "t", "ok": 1},
            "items": [{"x-api-key": "k2"}],
        }
    )
    assert out["Authorization"] == REDACTED
    assert out["nested"] == {
        "password": REDACTED,
        "api_key": REDACTED,
        "client_secret": REDACTED,
        "refresh_token": REDACTED,
        "ok": 1,
    }
    assert out["items"][0]["x-api-key"] == REDACTED


def test_bearer_tokens_and_jwts_inside_strings_are_masked() -> None:
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    line = _serialize({"message": f"calling with Bearer {jwt_like} and raw {jwt_like}"})
    assert "eyJ" not in line
    assert "alice" not in line


def test_stack_traces_are_truncated() -> None:
    line = json.loads(_serialize({"message": "x", "exception": "y" * 5000}))
    assert len(line["exception"]) <= MAX_STACK_CHARS + 1


def test_the_logger_writes_redacted_json(caplog: pytest.LogCaptureFixture) -> None:
    from underlay.observability import get_logger

    logger = get_logger()
    with caplog.at_level(logging.INFO):
        logger.info("login", extra={"password": "hunter2", "user": "alice"})
    rendered = logger.registered_formatter.format(caplog.records[-1])
    assert "hunter2" not in rendered
    doc = json.loads(rendered)
    assert doc["user"] == "alice" and doc["service"] == "underlay" and doc["stage"] == "dev"


def test_tracer_is_not_created_unless_enabled(clean_env: pytest.MonkeyPatch) -> None:
    from underlay.observability import get_tracer, reset_observability

    assert get_tracer() is None
    clean_env.setenv("UNDERLAY_OBSERVABILITY__TRACING_ENABLED", "true")
    clean_env.setenv("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon here
    from underlay.settings import reset_settings

    reset_settings()
    reset_observability()
    assert get_tracer() is not None
