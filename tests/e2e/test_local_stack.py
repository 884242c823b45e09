"""The local stack as a user runs it: `underlay dev` in its own process, called over HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import REPO, free_port

UNDERLAY = Path(sys.executable).parent / "underlay"


class Stack:
    def __init__(self, url: str, home: Path) -> None:
        self.url, self.home = url, home

    def issuer(self) -> Any:
        from infra.local.issuer import LocalIssuer

        return LocalIssuer(self.home / "issuer-key.pem")

    def token(self, **kwargs: Any) -> str:
        return str(self.issuer().mint(**kwargs))

    def request(
        self, method: str, path: str, *, token: str | None = None, body: bytes | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("dev-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERLAY_") and k != "AWS_ENDPOINT_URL"}
    env.update({"UNDERLAY_DEV_HOME": str(home), "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen(
        [str(UNDERLAY), "dev", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if line.startswith("ready "):
            assert line.strip() == f"ready http://127.0.0.1:{port}"
            break
    else:
        process.kill()
    if process.poll() is not None:
        pytest.fail("underlay dev exited:\n" + "".join(seen))
    yield Stack(f"http://127.0.0.1:{port}", home)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 0, out
    assert "stopped" in out and "Traceback" not in out


def problem(result: tuple[int, dict[str, str], bytes], status: int, code: str) -> dict[str, Any]:
    got, headers, body = result
    assert got == status, body
    assert headers["Content-Type"] == "application/problem+json"
    doc = json.loads(body)
    assert doc["status"] == status and doc["code"] == code
    assert doc["correlation_id"] == headers["X-Correlation-ID"]
    assert b"Traceback" not in body and b"<html" not in body.lower()
    return doc


def test_public_health_and_liveness(stack: Stack) -> None:
    status, headers, body = stack.request("GET", "/v1/health/live", X_Request_ID="abc-1")
    assert status == 200 and headers["Content-Type"] == "application/health+json"
    assert headers["X-Correlation-ID"] == "abc-1"
    assert json.loads(body)["status"] == "pass"
    status, _, body = stack.request("GET", "/v1/health/ready")
    assert status == 200 and json.loads(body)["status"] in {"pass", "warn"}


def test_details_with_a_token(stack: Stack) -> None:
    status, _, body = stack.request("GET", "/v1/health/details", token=stack.token(scopes=["platform:read"]))
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "pass", doc
    assert doc["checks"]["redis:responseTime"][0]["status"] == "pass"
    assert "dynamodb:audit:responseTime" in doc["checks"]


def test_jwks_is_served_on_the_same_port(stack: Stack) -> None:
    status, _, body = stack.request("GET", "/.well-known/jwks.json")
    assert status == 200 and json.loads(body)["keys"][0]["kid"] == stack.issuer().kid


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_every_bad_token_is_a_clear_401_or_403(stack: Stack) -> None:
    issuer = stack.issuer()
    now = int(time.time())
    valid = issuer.mint(scopes=["platform:read"])
    _, payload, _ = valid.split(".")
    other_key = __import__("infra.local.issuer", fromlist=["LocalIssuer"]).LocalIssuer(
        stack.home / "other.pem"
    )
    cases = {
        "TOKEN_MISSING": None,
        "TOKEN_EXPIRED": issuer.mint(scopes=["platform:read"], exp=now - 300, iat=now - 600, nbf=now - 600),
        "TOKEN_NOT_YET_VALID": issuer.mint(scopes=["platform:read"], nbf=now + 600),
        "TOKEN_INVALID_ISSUER": issuer.mint(scopes=["platform:read"], iss="https://evil.example"),
        "TOKEN_INVALID_AUDIENCE": issuer.mint(scopes=["platform:read"], aud="another-api"),
        "TOKEN_ALGORITHM_REJECTED": f"{_b64({'alg': 'none', 'kid': issuer.kid})}.{payload}.",
        "TOKEN_UNKNOWN_KEY": jwt.encode(
            jwt.decode(valid, options={"verify_signature": False}),
            other_key.private_key,
            algorithm="RS256",
            headers={"kid": "not-published"},
        ),
        "TOKEN_INVALID_SIGNATURE": jwt.encode(
            jwt.decode(valid, options={"verify_signature": False}),
            other_key.private_key,
            algorithm="RS256",
            headers={"kid": issuer.kid},
        ),
        "TOKEN_MALFORMED": "garbage",
    }
    for code, token in cases.items():
        result = stack.request("GET", "/v1/health/details", token=token)
        problem(result, 401, code)
        assert result[1]["WWW-Authenticate"].startswith("Bearer")
    hs256 = jwt.encode(
        jwt.decode(valid, options={"verify_signature": False}),
        "public-key-as-secret-" * 3,
        algorithm="HS256",
        headers={"kid": issuer.kid},
    )
    problem(stack.request("GET", "/v1/health/details", token=hs256), 401, "TOKEN_ALGORITHM_REJECTED")
    wrong_scope = issuer.mint(scopes=["flags:read"])
    problem(stack.request("GET", "/v1/health/details", token=wrong_scope), 403, "INSUFFICIENT_SCOPE")


def test_unknown_route_wrong_method_and_bodies(stack: Stack) -> None:
    problem(stack.request("GET", "/v1/does-not-exist"), 404, "NOT_FOUND")
    result = stack.request("DELETE", "/v1/health")
    problem(result, 405, "METHOD_NOT_ALLOWED")
    assert result[1]["Allow"] == "GET"
    problem(
        stack.request("POST", "/v1/health", body=b"{oops", Content_Type="application/json"),
        405,
        "METHOD_NOT_ALLOWED",
    )


def test_openapi_and_offline_swagger(stack: Stack) -> None:
    status, _, body = stack.request("GET", "/v1/openapi.json")
    doc = json.loads(body)
    assert status == 200 and "/v1/health/details" in doc["paths"]
    status, _, html = stack.request("GET", "/v1/docs")
    assert status == 200 and b"SwaggerUIBundle" in html and b"<script src=" not in html


def test_an_oversized_body_is_413(stack: Stack) -> None:
    big = b'{"x":"' + b"a" * 1_100_000 + b'"}'
    problem(
        stack.request("GET", "/v1/health/live", body=big, Content_Type="application/json"),
        413,
        "PAYLOAD_TOO_LARGE",
    )


def test_cache_api_over_http(stack: Stack) -> None:
    token = stack.token(scopes=["cache:admin"])
    status, _, body = stack.request("GET", "/v1/cache/stats", token=token)
    assert status == 200, body
    stats = json.loads(body)
    assert {"hit_ratio", "by_type", "memory", "keys", "top_keys", "circuit"} <= stats.keys()
    status, _, body = stack.request("DELETE", "/v1/cache/tags/movies", token=token)
    assert status == 200 and json.loads(body) == {"tag": "movies", "deleted": 0}
    problem(stack.request("DELETE", "/v1/cache/pattern/*", token=token), 422, "VALIDATION_FAILED")
    problem(
        stack.request("GET", "/v1/cache/stats", token=stack.token(scopes=["flags:read"])),
        403,
        "INSUFFICIENT_SCOPE",
    )


def test_invalidations_are_audited_and_the_chain_verifies(stack: Stack) -> None:
    cache_token = stack.token(sub="ops-e2e", scopes=["cache:admin"])
    auditor = stack.token(sub="auditor-e2e", scopes=["audit:read"])
    status, _, _ = stack.request("DELETE", "/v1/cache/keys/home:banners", token=cache_token)
    assert status == 200
    status, _, body = stack.request(
        "GET", "/v1/audit-logs?user=ops-e2e&action=cache.invalidate", token=auditor
    )
    assert status == 200, body
    entries = json.loads(body)["entries"]
    assert entries and entries[0]["entity_id"] == "home:banners" and entries[0]["actor"] == "ops-e2e"
    assert entries[0]["source_ip"] == "127.0.0.1" and len(entries[0]["hash"]) == 64
    status, _, body = stack.request("GET", "/v1/audit-logs/verify", token=auditor)
    assert status == 200 and json.loads(body)["ok"] is True, body


def test_responses_carry_rate_limit_headers(stack: Stack) -> None:
    token = stack.token(sub="limited-e2e", scopes=["platform:read"], tier="premium")
    status, headers, _ = stack.request("GET", "/v1/health/details", token=token)
    assert status == 200
    assert headers["RateLimit-Policy"] == '"premium";q=300;w=60'
    assert headers["X-RateLimit-Limit"] == "300" and int(headers["X-RateLimit-Remaining"]) < 300


def test_enqueue_over_http_and_watch_it_succeed(stack: Stack) -> None:
    token = stack.token(sub="jobs-e2e", scopes=["jobs:read", "jobs:write"])
    body = json.dumps({"type": "cache.warm", "payload": {}, "priority": "high"}).encode()
    status, _, created = stack.request(
        "POST", "/v1/jobs", token=token, body=body, content_type="application/json"
    )
    assert status == 202, created
    job_id = json.loads(created)["id"]
    deadline = time.monotonic() + 20
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, _, raw = stack.request("GET", f"/v1/jobs/{job_id}", token=token)
        job = json.loads(raw)
        if job.get("status") == "succeeded":
            break
        time.sleep(0.2)
    assert job.get("status") == "succeeded", job
    assert [h["status"] for h in job["history"]] == ["pending", "running", "succeeded"]


def test_create_a_flag_and_evaluate_it_over_http(stack: Stack) -> None:
    admin = stack.token(sub="pm-e2e", scopes=["flags:read", "flags:write"])
    flag = {
        "key": "e2e-banner",
        "type": "boolean",
        "enabled": True,
        "default": False,
        "rules": [
            {
                "conditions": [{"attribute": "tier", "operator": "eq", "value": "premium"}],
                "serve": {"variant": "true"},
            }
        ],
    }
    status, _, body = stack.request(
        "POST",
        "/v1/feature-flags",
        token=admin,
        body=json.dumps(flag).encode(),
        content_type="application/json",
    )
    assert status == 201, body
    reader = stack.token(sub="reader-e2e", scopes=["flags:evaluate"], tier="premium")
    status, _, body = stack.request(
        "POST", "/v1/feature-flags/evaluate", token=reader, body=b"{}", content_type="application/json"
    )
    assert status == 200, body
    by_key = {f["key"]: f for f in json.loads(body)["flags"]}
    assert by_key["e2e-banner"]["value"] is True and by_key["e2e-banner"]["reason"] == "RULE_MATCH"


def test_change_a_setting_over_http_and_every_function_sees_it(stack: Stack) -> None:
    ops = stack.token(sub="ops-e2e", scopes=["config:read", "config:write", "platform:read"])
    path = "/v1/configuration/health.latency_warn_ms"
    status, headers, body = stack.request("GET", path, token=ops)
    assert status == 200 and json.loads(body)["source"] == "default", body
    version = headers["ETag"]
    status, _, body = stack.request(
        "PUT", path, token=ops, body=b'{"value": 1234}', content_type="application/json", if_match=version
    )
    assert status == 200 and json.loads(body)["value"] == 1234.0, body
    status, _, body = stack.request(
        "PUT", path, token=ops, body=b'{"value": 1}', content_type="application/json", if_match=version
    )
    assert status == 409 and json.loads(body)["code"] == "VERSION_CONFLICT"
    status, _, body = stack.request("GET", "/v1/configuration", token=ops)
    by_key = {s["key"]: s for s in json.loads(body)["settings"]}
    assert by_key["health.latency_warn_ms"]["source"] == "runtime"
    assert by_key["http.cursor_secret"]["value"]["secret"] is True
    assert by_key["http.cors_origins"]["source"] == "stage"  # from infra/stages/dev.json
