from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

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


# --- real log output -----------------------------------------------------------------------------


class _Output:
    """What the logger's own handler writes (its stream, stdout on Lambda, swapped for a buffer)."""

    def __init__(self) -> None:
        import io

        self.buffer = io.StringIO()

    def readouterr(self) -> SimpleNamespace:
        out = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return SimpleNamespace(out=out)


@pytest.fixture
def capfd() -> Iterator[_Output]:
    from underlay.observability import get_logger

    output = _Output()
    handler = get_logger().registered_handler
    previous = handler.setStream(output.buffer)  # type: ignore[attr-defined]
    yield output
    handler.setStream(previous)  # type: ignore[attr-defined]


def _lines(capfd: _Output) -> list[dict]:
    """The JSON lines the logger actually wrote (one object per line, nothing else)."""
    out = capfd.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _health_event(**headers: str) -> dict:
    from tests.conftest import http_event

    event = http_event("GET", "/v1/health/details", scopes="platform:read", sub="alice")
    event["headers"] = {"x-correlation-id": "corr-log", **headers}
    return event


def test_the_access_line_has_every_field(capfd: _Output) -> None:
    from functions.health.app import handler

    capfd.readouterr()
    handler(_health_event(), None)
    access = [line for line in _lines(capfd) if line.get("message") == "request"]
    assert len(access) == 1
    line = access[0]
    for name in ("timestamp", "level", "service", "stage", "message", "correlation_id", "trace_id"):
        assert line[name], name
    assert line["user"] == "alice" and line["method"] == "GET" and line["path"] == "/v1/health/details"
    assert line["status"] in (200, 503) and isinstance(line["latency_ms"], float)
    assert line["correlation_id"] == "corr-log" and len(line["trace_id"]) == 32
    assert "duration_ms" not in line


def test_an_anonymous_request_logs_no_user_left_from_the_previous_one(capfd: _Output) -> None:
    from functions.health.app import handler
    from tests.conftest import http_event

    handler(_health_event(), None)
    capfd.readouterr()
    handler(http_event("GET", "/v1/health/live"), None)
    (access,) = [line for line in _lines(capfd) if line.get("message") == "request"]
    assert "user" not in access


def test_secrets_are_masked_in_real_log_output(capfd: _Output) -> None:
    from underlay.observability import get_logger

    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLXZhbHVl"
    capfd.readouterr()
    get_logger().info(
        f"calling upstream with Authorization: Bearer opaque-token-12345 and {jwt}",
        extra={
            "password": "pw-hunter2",
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "X-Api-Key": "key-123", "accept": "json"},
            "upstream": {"nested": {"deeper": [{"client_secret": "cs-456"}, {"refresh_token": "rt-789"}]}},
            "url": "https://api.example.com/v1?api_key=qs-321&page=2",
            "note": "connect failed: password=pw-in-text",
        },
    )
    raw = capfd.readouterr().out
    (line,) = [json.loads(x) for x in raw.splitlines() if x.startswith("{")]
    for secret in ("pw-hunter2", "dXNlcjpwYXNz", "key-123", "cs-456", "rt-789", "qs-321", "pw-in-text"):
        assert secret not in raw, secret
    assert "opaque-token-12345" not in raw and "eyJ" not in raw and "Ym9i" not in raw
    assert line["headers"]["accept"] == "json" and line["url"].endswith("page=2")  # the rest stays readable
    assert line["password"] == REDACTED and line["headers"]["Authorization"] == REDACTED


def test_a_stack_trace_is_one_field_of_at_most_1000_characters(capfd: _Output) -> None:
    from underlay.observability import get_logger

    capfd.readouterr()
    try:
        raise RuntimeError("why: " + "detail " * 500)
    except RuntimeError:
        get_logger().exception("it failed")
    raw = capfd.readouterr().out
    lines = [x for x in raw.splitlines() if x.strip()]
    assert len(lines) == 1  # single-line JSON, the trace inside it
    doc = json.loads(lines[0])
    assert doc["exception_name"] == "RuntimeError"
    assert doc["exception"].startswith("Traceback") and len(doc["exception"]) == MAX_STACK_CHARS + 1


# --- trace sampling ------------------------------------------------------------------------------

SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOT_SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def test_sampling_honours_the_callers_flag_whatever_the_rate() -> None:
    from underlay.observability import sample_trace

    assert sample_trace(SAMPLED, 0.0, draw=lambda: 0.99) == (True, "parent")
    assert sample_trace(NOT_SAMPLED, 1.0, draw=lambda: 0.0) == (False, "parent")


def test_sampling_without_a_caller_uses_the_rate() -> None:
    from underlay.observability import sample_trace

    assert sample_trace(None, 0.1, draw=lambda: 0.05).sampled
    assert not sample_trace(None, 0.1, draw=lambda: 0.1).sampled
    assert not sample_trace(None, 0.0, draw=lambda: 0.0).sampled
    assert sample_trace(None, 1.0, draw=lambda: 0.999).sampled
    import random

    rng = random.Random(7)
    share = sum(sample_trace(None, 0.1, draw=rng.random).sampled for _ in range(20_000)) / 20_000
    assert 0.09 < share < 0.11


def test_the_rate_comes_from_config(clean_env: pytest.MonkeyPatch) -> None:
    from underlay.observability import sample_trace

    assert sample_trace(None, draw=lambda: 0.099).sampled  # default 0.1
    assert not sample_trace(None, draw=lambda: 0.1).sampled
    clean_env.setenv("UNDERLAY_OBSERVABILITY__TRACE_SAMPLE_RATE", "0.5")
    from underlay.settings import reset_settings

    reset_settings()
    assert sample_trace(None, draw=lambda: 0.4).sampled


def test_errors_are_always_kept_and_flags_are_rewritten() -> None:
    from underlay.observability import TraceSampling, keep_trace, with_sampled_flag

    assert keep_trace(TraceSampling(False, "rate"), 500) and keep_trace(TraceSampling(False, "parent"), 503)
    assert not keep_trace(TraceSampling(False, "rate"), 404)
    assert keep_trace(TraceSampling(True, "rate"), 200)
    assert with_sampled_flag(NOT_SAMPLED, True) == SAMPLED
    assert with_sampled_flag(SAMPLED, False) == NOT_SAMPLED
    assert with_sampled_flag(SAMPLED[:-2] + "03", False).endswith("-02")  # other flag bits are kept


def _health(*, traceparent: str | None = None, explode: bool = False) -> dict:
    from functions.health.app import handler
    from tests.conftest import http_event

    event = http_event("GET", "/v1/health/live")
    event["headers"] = {"traceparent": traceparent} if traceparent else {}
    return handler(event, None)


def test_the_response_traceparent_carries_the_decision(clean_env: pytest.MonkeyPatch) -> None:
    from underlay.settings import reset_settings

    assert _health(traceparent=NOT_SAMPLED)["headers"]["traceparent"] == NOT_SAMPLED
    assert _health(traceparent=SAMPLED)["headers"]["traceparent"] == SAMPLED
    clean_env.setenv("UNDERLAY_OBSERVABILITY__TRACE_SAMPLE_RATE", "0")
    reset_settings()
    assert _health()["headers"]["traceparent"].endswith("-00")
    clean_env.setenv("UNDERLAY_OBSERVABILITY__TRACE_SAMPLE_RATE", "1")
    reset_settings()
    assert _health()["headers"]["traceparent"].endswith("-01")


def test_an_error_response_forces_the_sampled_flag(
    clean_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    from underlay import health

    from functions.health.app import handler
    from tests.conftest import http_event

    def explode(*_: object, **__: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(health, "run_checks", explode)
    event = http_event("GET", "/v1/health")
    event["headers"] = {"traceparent": NOT_SAMPLED}
    response = handler(event, None)
    assert response["statusCode"] == 500
    assert response["headers"]["traceparent"] == SAMPLED


class _Emitter:
    """Collects what the X-Ray recorder would send to the daemon (there is no daemon here)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_entity(self, entity: object) -> None:
        self.sent.append(json.loads(entity.serialize()))  # type: ignore[attr-defined]

    def set_daemon_address(self, address: str) -> None:
        pass


@pytest.fixture
def recorder() -> object:
    """A real X-Ray recorder streaming every closed subsegment at once, as it does on Lambda."""
    from aws_xray_sdk import global_sdk_config
    from aws_xray_sdk.core import AWSXRayRecorder

    was_enabled = global_sdk_config.sdk_enabled()  # a Tracer created with tracing disabled turns it off
    global_sdk_config.set_sdk_enabled(True)
    rec = AWSXRayRecorder()
    rec.configure(emitter=_Emitter(), sampling=False, context_missing="LOG_ERROR", streaming_threshold=0)
    rec.begin_segment("invocation")
    yield rec
    rec.end_segment()
    global_sdk_config.set_sdk_enabled(was_enabled)


def _traced(recorder: object, sampled: bool, status: int) -> list[dict]:
    from types import SimpleNamespace

    from underlay.observability import TraceSampling, traced

    def run() -> dict:
        with recorder.in_subsegment("dynamodb"):  # type: ignore[attr-defined]
            pass
        return {"statusCode": status}

    tracer = SimpleNamespace(provider=recorder)
    traced(tracer, "## GET /v1/x", TraceSampling(sampled, "rate"), run, lambda: RuntimeError("why"))  # type: ignore[arg-type]
    sent: list[dict] = recorder.emitter.sent  # type: ignore[attr-defined]
    return sent


def test_an_unsampled_success_records_nothing(recorder: object) -> None:
    assert _traced(recorder, False, 200) == []


def test_a_sampled_request_records_its_subsegment_and_children(recorder: object) -> None:
    names = {doc["name"]: doc for doc in _traced(recorder, True, 200)}
    assert set(names) == {"## GET /v1/x", "dynamodb"}
    assert names["## GET /v1/x"]["annotations"] == {"sampled_by": "rate", "status": 200}


def test_an_unsampled_error_still_reaches_xray(recorder: object) -> None:
    (doc,) = _traced(recorder, False, 500)
    assert doc["name"] == "## GET /v1/x error"
    assert doc["annotations"] == {"sampled_by": "error", "status": 500}
    assert doc["cause"]["exceptions"][0]["message"] == "why"


# --- metric dimensions: exactly `stage` plus the emitter's own, whatever POWERTOOLS_SERVICE_NAME says ----------


def _emf(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


@pytest.fixture
def lambda_like(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Metrics on, and the service name CDK gives every function (`infra/constructs/functions.py`)."""
    from underlay.observability import reset_observability

    clean_env.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    clean_env.setenv("POWERTOOLS_SERVICE_NAME", "admin")
    clean_env.setenv("UNDERLAY_STAGE", "prod")
    reset_observability()
    return clean_env


def test_emit_metric_has_stage_and_its_own_dimensions_only(
    lambda_like: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from underlay.observability import emit_metric

    emit_metric("ServerErrors", function="admin")
    (line,) = _emf(capsys.readouterr().out)
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Underlay" and directive["Dimensions"] == [["stage", "function"]]
    assert directive["Metrics"] == [{"Name": "ServerErrors", "Unit": "Count"}]
    assert line["stage"] == "prod" and line["function"] == "admin" and "service" not in line


def test_the_per_invocation_metrics_have_no_service_dimension_either(
    lambda_like: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from underlay.observability import get_metrics

    metrics = get_metrics()
    metrics.add_metric(name="Requests", unit="Count", value=1)
    metrics.flush_metrics()
    (line,) = _emf(capsys.readouterr().out)
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["stage"]] and "service" not in line


def test_emit_metric_writes_nothing_when_metrics_are_off(
    lambda_like: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from underlay.observability import emit_metric

    lambda_like.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    emit_metric("ServerErrors", function="admin")
    assert _emf(capsys.readouterr().out) == []
