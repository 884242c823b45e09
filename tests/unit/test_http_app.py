"""The HTTP app factory, through the real health handler: every bad input gets problem+json and no trace."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import load_event

pytestmark = pytest.mark.usefixtures("clean_env")


def call(event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    from functions.health.app import handler

    result = handler(event, None)
    body = result.get("body") or ""
    content_type = result["headers"].get("Content-Type", "")
    parsed = json.loads(body) if "json" in content_type else body
    return result["statusCode"], result["headers"], parsed


def event(
    method: str, path: str, *, scopes: str | None = None, body: str | None = None, **headers: str
) -> dict:
    e = load_event("http/health")
    e["routeKey"] = "$default"
    e["rawPath"] = e["requestContext"]["http"]["path"] = path
    e["requestContext"]["http"]["method"] = method
    e["headers"] = {k.replace("_", "-"): v for k, v in headers.items()}
    if scopes is not None:
        e["requestContext"]["authorizer"] = {"lambda": {"sub": "alice", "scopes": scopes, "tier": "free"}}
    if body is not None:
        e["body"] = body
    return e


def assert_problem(status: int, headers: dict[str, str], body: Any, expected: int, code: str) -> None:
    assert status == expected
    assert headers["Content-Type"] == "application/problem+json"
    assert body["status"] == expected and body["code"] == code
    assert set(body) >= {"type", "title", "status", "detail", "instance", "code", "correlation_id"}
    assert "Traceback" not in json.dumps(body)


def test_live_is_health_json_with_correlation_and_traceparent() -> None:
    status, headers, body = call(event("GET", "/v1/health/live", x_request_id="req-123"))
    assert status == 200 and headers["Content-Type"] == "application/health+json"
    assert body["status"] == "pass"
    assert headers["X-Correlation-ID"] == "req-123"
    assert headers["traceparent"].startswith("00-")


def test_incoming_traceparent_is_propagated() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    _, headers, _ = call(event("GET", "/v1/health/live", traceparent=tp, x_correlation_id="c-1"))
    assert headers["traceparent"] == tp and headers["X-Correlation-ID"] == "c-1"


def test_a_hostile_correlation_id_is_replaced() -> None:
    _, headers, _ = call(event("GET", "/v1/health/live", x_correlation_id="<script>\nboom"))
    assert headers["X-Correlation-ID"] != "<script>\nboom" and len(headers["X-Correlation-ID"]) == 36


def test_unknown_route_is_404_problem() -> None:
    assert_problem(*call(event("GET", "/v1/nope")), 404, "NOT_FOUND")


def test_wrong_method_is_405_with_allow() -> None:
    status, headers, body = call(event("DELETE", "/v1/health"))
    assert_problem(status, headers, body, 405, "METHOD_NOT_ALLOWED")
    assert headers["Allow"] == "GET"


def test_missing_identity_is_401_with_challenge() -> None:
    status, headers, body = call(event("GET", "/v1/health/details"))
    assert_problem(status, headers, body, 401, "TOKEN_MISSING")
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_authorizer_rejection_is_rendered_as_401() -> None:
    e = event("GET", "/v1/health/details")
    e["requestContext"]["authorizer"] = {"lambda": {"auth_error": "TOKEN_EXPIRED", "auth_status": 401}}
    status, headers, body = call(e)
    assert_problem(status, headers, body, 401, "TOKEN_EXPIRED")
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


def test_scope_is_enforced_again_from_the_declaration() -> None:
    assert_problem(*call(event("GET", "/v1/health/details", scopes="flags:read")), 403, "INSUFFICIENT_SCOPE")


def test_oversized_body_is_413(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("UNDERLAY_HTTP__MAX_BODY_BYTES", "10")
    e = event("GET", "/v1/health/live", body='{"x": "0123456789"}', content_type="application/json")
    assert_problem(*call(e), 413, "PAYLOAD_TOO_LARGE")


def test_malformed_json_and_wrong_content_type() -> None:
    # No health route takes a body; a declared POST would be the same path through `_check_request`.
    from underlay import declaration

    extra = declaration.Route("POST", "/v1/health/live", "health", None, "test-only")
    original = declaration.ROUTES
    declaration.ROUTES = (*original, extra)
    declaration._routes_by_key.cache_clear()
    declaration._compiled.cache_clear()
    try:
        e = event("POST", "/v1/health/live", body="{broken", content_type="application/json")
        assert_problem(*call(e), 400, "MALFORMED_BODY")
        e = event("POST", "/v1/health/live", body="a=b", content_type="application/x-www-form-urlencoded")
        assert_problem(*call(e), 415, "UNSUPPORTED_MEDIA_TYPE")
    finally:
        declaration.ROUTES = original
        declaration._routes_by_key.cache_clear()
        declaration._compiled.cache_clear()


def test_query_validation_is_422_with_fields() -> None:
    e = event("GET", "/v1/health/history", scopes="platform:read")
    e["rawQueryString"] = "limit=0"
    e["queryStringParameters"] = {"limit": "0"}
    status, headers, body = call(e)
    assert_problem(status, headers, body, 422, "VALIDATION_FAILED")
    assert body["errors"][0]["field"] == "limit"


def test_invalid_configuration_is_503_config_invalid(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("UNDERLAY_HEALTH__CHECK_TIMEOUT_SECONDS", "-987654.5")  # distinctive: never in a uuid
    status, headers, body = call(event("GET", "/v1/health/live"))
    assert_problem(status, headers, body, 503, "CONFIG_INVALID")
    assert "987654" not in json.dumps(body)


def test_cors_origin_from_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("UNDERLAY_HTTP__CORS_ORIGINS", '["https://app.example.com"]')
    _, headers, _ = call(event("GET", "/v1/health/live", origin="https://app.example.com"))
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    _, headers, _ = call(event("GET", "/v1/health/live", origin="https://evil.example.com"))
    assert "Access-Control-Allow-Origin" not in headers


def test_one_access_log_line_per_request() -> None:
    import logging

    from underlay.observability import get_logger

    formatter = get_logger().registered_formatter
    lines: list[dict[str, Any]] = []

    class Tap(logging.Handler):  # formats each record as it is emitted, as the real handler does
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(formatter.format(record)))

    tap = Tap()
    logging.getLogger("underlay").addHandler(tap)
    try:
        call(event("GET", "/v1/nope", x_correlation_id="log-check"))
    finally:
        logging.getLogger("underlay").removeHandler(tap)
    after = json.loads(formatter.format(logging.makeLogRecord({"msg": "later", "levelname": "INFO"})))
    assert "correlation_id" not in after and "method" not in after  # the request's keys ended with it
    access = [line for line in lines if line.get("message") == "request"]
    assert len(access) == 1
    assert access[0]["method"] == "GET" and access[0]["route"] == "/v1/nope" and access[0]["status"] == 404
    assert access[0]["correlation_id"] == "log-check" and "latency_ms" in access[0]
    assert access[0]["service"] == "underlay" and access[0]["stage"] == "dev" and "cold_start" in access[0]


def test_an_unexpected_error_is_500_without_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    from underlay import health

    def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret=hunter2 in a stack")

    monkeypatch.setattr(health, "run_checks", explode)
    status, headers, body = call(event("GET", "/v1/health"))
    assert_problem(status, headers, body, 500, "INTERNAL_ERROR")
    assert "hunter2" not in json.dumps(body)


def test_openapi_document_and_docs_are_served_offline() -> None:
    status, _, doc = call(event("GET", "/v1/openapi.json"))
    assert status == 200 and doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    details = doc["paths"]["/v1/health/details"]["get"]
    assert details["security"] == [{"bearerAuth": ["platform:read"]}]
    assert "401" in details["responses"] and "403" in details["responses"]
    status, headers, html = call(event("GET", "/v1/docs"))
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "SwaggerUIBundle" in html and "cdn" not in html.lower().split("swaggeruibundle")[0][-2000:]
    assert "<script src=" not in html  # assets inline, no network


class _RecordingHook:
    def __init__(self, refuse: bool = False, crash: bool = False) -> None:
        self.refuse, self.crash = refuse, crash
        self.seen: list[tuple[str, str | None, int]] = []

    def before(self, request: Any) -> None:
        if self.crash:
            raise RuntimeError("hook bug")
        if self.refuse:
            from underlay.errors import RateLimitedError

            raise RateLimitedError(7)

    def after(self, request: Any, status: int, headers: dict[str, str]) -> None:
        self.seen.append((request.route_key, request.identity.sub if request.identity else None, status))
        headers["X-Hooked"] = "yes"


def test_request_hooks_see_every_request_and_can_answer_it() -> None:
    from functions.health.app import app

    hook = _RecordingHook()
    app.hooks.append(hook)
    try:
        status, headers, _ = call(event("GET", "/v1/health/details", scopes="platform:read"))
        assert headers["X-Hooked"] == "yes"
        call(event("GET", "/v1/nope"))
        hook.refuse = True
        status, headers, body = call(event("GET", "/v1/health/live"))
        assert_problem(status, headers, body, 429, "RATE_LIMITED")
        assert headers["Retry-After"] == "7" and headers["X-Hooked"] == "yes"
    finally:
        app.hooks.remove(hook)
    assert hook.seen[0][:2] == ("GET /v1/health/details", "alice")
    assert hook.seen[1] == ("$default", None, 404)
    assert hook.seen[2] == ("GET /v1/health/live", None, 429)


def test_a_broken_hook_never_fails_the_request() -> None:
    from functions.health.app import app

    hook = _RecordingHook(crash=True)
    app.hooks.append(hook)
    try:
        status, _, _ = call(event("GET", "/v1/health/live"))
    finally:
        app.hooks.remove(hook)
    assert status == 200


def test_the_request_context_is_bound_for_the_handler() -> None:
    from underlay import context

    from functions.health.app import app

    captured: list[context.RequestContext] = []

    class Capture:
        def before(self, request: Any) -> None:
            captured.append(context.current())

        def after(self, request: Any, status: int, headers: dict[str, str]) -> None: ...

    hook = Capture()
    app.hooks.append(hook)
    try:
        e = event("GET", "/v1/health/details", scopes="platform:read", x_correlation_id="corr-9")
        call(e)
    finally:
        app.hooks.remove(hook)
    assert captured[0].correlation_id == "corr-9" and captured[0].sub == "alice"
    assert captured[0].route == "GET /v1/health/details"
    assert captured[0].source_ip == e["requestContext"]["http"]["sourceIp"]
