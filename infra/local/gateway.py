"""What API Gateway (HTTP API, payload 2.0) does, done locally: route from the declaration, run the real
authorizer, build the event, run the real handler, and turn its answer into an HTTP response.

Differences from AWS, on purpose and documented in the README:
- A protected route called without an Authorization header still reaches the authorizer (on AWS, API Gateway
  answers that one case itself with 401 `{"message":"Unauthorized"}`, since the header is an identity source).
- No authorizer result cache: every request is authorized afresh.
"""

from __future__ import annotations

import base64
import importlib
import threading
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

from underlay import declaration

Handler = Callable[[dict[str, Any], Any], Any]


class LambdaContext(SimpleNamespace):
    """Enough of the Lambda context object for Powertools and our handlers."""

    def __init__(self, function_name: str, timeout_s: int, memory_mb: int) -> None:
        super().__init__(
            function_name=f"underlay-local-{function_name}",
            function_version="$LATEST",
            invoked_function_arn=f"arn:aws:lambda:us-east-1:000000000000:function:underlay-local-{function_name}",
            memory_limit_in_mb=memory_mb,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/underlay-local-{function_name}",
            log_stream_name="local",
        )
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionRunner:
    """Loads `functions.<name>.app.handler` once and runs one invocation at a time, as a Lambda instance does."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._locks: dict[str, threading.Lock] = {
            name.name: threading.Lock() for name in declaration.FUNCTIONS
        }

    def handler(self, name: str) -> Handler:
        if name not in self._handlers:
            spec = declaration.function(name)
            module_name, attr = spec.handler.rsplit(".", 1)
            self._handlers[name] = getattr(importlib.import_module(module_name), attr)
        return self._handlers[name]

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        spec = declaration.function(name)
        with self._locks[name]:
            return self.handler(name)(event, LambdaContext(name, spec.timeout_s, spec.memory_mb))


class Request:
    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, client_ip: str):
        self.method = method.upper()
        path, _, query = target.partition("?")
        self.path, self.query = path or "/", query
        self.headers = headers
        self.body = body
        self.client_ip = client_ip

    def header_map(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name, value in self.headers:
            key = name.lower()
            merged[key] = f"{merged[key]},{value}" if key in merged else value
        return merged


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body


def _json_reply(status: int, text: str) -> Reply:
    return Reply(status, {"Content-Type": "application/json"}, text.encode())


def http_event(request: Request, route_key: str, path_parameters: dict[str, str]) -> dict[str, Any]:
    headers = request.header_map()
    now = time.time()
    query: dict[str, str] = {}
    for name, value in parse_qsl(request.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    body: str | None = None
    is_base64 = False
    if request.body:
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            body, is_base64 = base64.b64encode(request.body).decode(), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.client_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": is_base64,
    }
    if "cookie" in headers:
        event["cookies"] = [c.strip() for c in headers["cookie"].split(";")]
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body is not None:
        event["body"] = body
    return event


def authorizer_event(http: dict[str, Any]) -> dict[str, Any]:
    headers = http["headers"]
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": f"arn:aws:execute-api:us-east-1:000000000000:local/$default/{http['routeKey'].replace(' ', '')}",
        "identitySource": [headers.get("authorization", ""), http["routeKey"]],
        "routeKey": http["routeKey"],
        "rawPath": http["rawPath"],
        "rawQueryString": http["rawQueryString"],
        "headers": headers,
        "queryStringParameters": http.get("queryStringParameters", {}),
        "requestContext": http["requestContext"],
        "pathParameters": http.get("pathParameters", {}),
    }


class LocalGateway:
    """Routes one request through the real authorizer and the real handler."""

    def __init__(self, runner: FunctionRunner, cors_origins: list[str] | None = None) -> None:
        self.runner = runner
        self.cors_origins = cors_origins or []
        self.extra_routes: dict[str, Callable[[Request], Reply]] = {}

    def handle(self, request: Request) -> Reply:
        extra = self.extra_routes.get(request.path)
        if extra is not None and request.method == "GET":
            return extra(request)
        if request.method == "OPTIONS" and "access-control-request-method" in request.header_map():
            return self._preflight(request)
        matched = declaration.match(request.method, request.path)
        route = matched.route
        route_key = route.key if route else "$default"
        function = route.function if route else declaration.DEFAULT_ROUTE_FUNCTION
        event = http_event(request, route_key, matched.path_parameters)
        if route is not None and not route.public:
            decision = self._authorize(event)
            if decision is None:
                return _json_reply(500, '{"message":"Internal Server Error"}')
            if not decision.get("isAuthorized"):
                return _json_reply(403, '{"message":"Forbidden"}')
            event["requestContext"]["authorizer"] = {"lambda": decision.get("context") or {}}
        try:
            result = self.runner.invoke(function, event)
        except Exception:
            return _json_reply(500, '{"message":"Internal Server Error"}')
        return self._reply(result)

    def _authorize(self, event: dict[str, Any]) -> dict[str, Any] | None:
        try:
            decision = self.runner.invoke("authorizer", authorizer_event(event))
        except Exception:
            return None
        return decision if isinstance(decision, dict) else None

    def _preflight(self, request: Request) -> Reply:
        origin = request.header_map().get("origin", "")
        headers: dict[str, str] = {}
        if "*" in self.cors_origins or origin in self.cors_origins:
            headers = {
                "Access-Control-Allow-Origin": "*" if "*" in self.cors_origins else origin,
                "Access-Control-Allow-Methods": "GET,POST,PUT,DELETE,PATCH,OPTIONS",
                "Access-Control-Allow-Headers": "authorization,content-type,x-correlation-id,x-request-id,traceparent",
                "Access-Control-Max-Age": "600",
            }
        return Reply(204, headers, b"")

    @staticmethod
    def _reply(result: Any) -> Reply:
        if not isinstance(result, dict) or "statusCode" not in result:
            return _json_reply(500, '{"message":"Internal Server Error"}')
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        for cookie in result.get("cookies") or []:
            headers.setdefault("Set-Cookie", cookie)
        return Reply(int(result["statusCode"]), headers, raw)
