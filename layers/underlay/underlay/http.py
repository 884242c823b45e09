"""The HTTP app factory: every API function is `app = create_app("<function>")` plus declared routes.

`UnderlayApp` is a Powertools `APIGatewayHttpResolver` (validation and OpenAPI on) that adds, in one place:
- routes registered from the declaration (`@app.handles("GET /v1/health")`), so scope, summary and path
  come from `underlay.declaration` and an undeclared route fails at import;
- correlation id (`X-Correlation-ID` / `X-Request-ID`, else generated) and W3C `traceparent` handling;
- authentication and scope enforcement read from the route declaration (defence in depth behind the authorizer);
- the body limit (413), content type (415) and malformed JSON (400) checks before any handler runs;
- CORS origins from settings;
- problem+json for every error (404/405 from the declaration, 422 from validation, 500 without a trace);
- one access-log line per request (method, path, route, status, latency_ms, user) and EMF request metrics;
- trace sampling (`underlay.observability.sample_trace`): the caller's traceparent flag, else the sample rate,
  and every 5xx kept;
- the request context (`underlay.context`) that events, audit and logs read, and one event batch per request;
- request hooks: domains extend every API function here (rate limiting, RED metrics, error groups, config
  reload) by adding a `"module:attribute"` to `REQUEST_HOOKS` instead of forking this factory.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from underlay import context, declaration, events
from underlay.errors import (
    PROBLEM_CONTENT_TYPE,
    ConfigInvalidError,
    InsufficientScopeError,
    MalformedBodyError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnderlayError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
    field_errors_from_pydantic,
    problem,
)
from underlay.observability import (
    get_logger,
    get_metrics,
    get_tracer,
    keep_trace,
    sample_trace,
    traced,
    with_sampled_flag,
)

F = TypeVar("F", bound=Callable[..., Any])

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_cold_start = True


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class RequestIdentity:
    """The caller as the authorizer described it (`requestContext.authorizer.lambda`)."""

    __slots__ = ("roles", "scopes", "sub", "tenant", "tier")

    def __init__(self, context: dict[str, Any]) -> None:
        self.sub: str = str(context.get("sub", ""))
        self.scopes: frozenset[str] = frozenset(str(context.get("scopes", "")).split())
        self.tier: str = str(context.get("tier", "") or "free")
        self.tenant: str = str(context.get("tenant", ""))
        self.roles: tuple[str, ...] = tuple(r for r in str(context.get("roles", "")).split(",") if r)


class RequestInfo:
    """What request hooks see. `error` is the unexpected exception behind a 500, if there was one."""

    __slots__ = ("error", "event", "identity", "method", "path", "route", "started")

    def __init__(
        self, event: dict[str, Any], method: str, path: str, route: declaration.Route | None
    ) -> None:
        self.event = event
        self.method = method
        self.path = path
        self.route = route  # the declared route, or None for an unknown route or wrong method
        self.identity: RequestIdentity | None = None
        self.error: BaseException | None = None
        self.started = time.perf_counter()

    @property
    def route_key(self) -> str:
        """`GET /v1/cache/keys/{key}` for a declared route; `$default` otherwise (keeps metric labels bounded)."""
        return self.route.key if self.route else "$default"


class RequestHook(Protocol):
    """Runs around every request of every API function.

    `before` runs after authentication and may raise an `UnderlayError` to answer instead of the handler
    (429, say); any other exception is logged and ignored, so a broken hook never fails a request.
    `after` sees the final status and may add response headers; its exceptions are logged and ignored.
    """

    def before(self, request: RequestInfo) -> None: ...

    def after(self, request: RequestInfo, status: int, headers: dict[str, str]) -> None: ...


# `"module:attribute"` of each hook object, in order. Imported once per function, when the app is created;
# a hook imports its heavy dependencies (redis, boto3) inside `before`/`after`, not at module level.
REQUEST_HOOKS: tuple[str, ...] = (
    # --- config (issue 5: hot reload check) ---
    "underlay.config.runtime:hook",
    # --- end of config ---
    # --- cache (issue 3: rate limiting) ---
    "underlay.ratelimit:hook",
    # --- end of cache ---
    # --- admin (issue 8: RED metrics, error groups) ---
    "underlay.admin.recorder:hook",
    # --- end of admin ---
    # --- observability (issue 8: sentry) ---
    "underlay.sentry:hook",
)


def _load_hooks() -> list[RequestHook]:
    import importlib

    hooks = []
    for spec in REQUEST_HOOKS:
        module, _, attribute = spec.partition(":")
        hooks.append(getattr(importlib.import_module(module), attribute))
    return hooks


class UnderlayApp(APIGatewayHttpResolver):
    def __init__(self, function: str) -> None:
        super().__init__(enable_validation=True)
        self.function = function
        self.correlation_id = ""
        self.traceparent = ""
        self.identity: RequestIdentity | None = None
        self.hooks: list[RequestHook] = _load_hooks()
        self.request_info: RequestInfo | None = None
        self.exception_handler(UnderlayError)(self._on_underlay_error)
        self.exception_handler(RequestValidationError)(self._on_validation_error)
        self.exception_handler(Exception)(self._on_unexpected_error)
        self.not_found(self._on_not_found)

    # --- routes ---------------------------------------------------------------------------------

    def handles(self, route_key: str, **kwargs: Any) -> Callable[[F], F]:
        """Register a handler for a declared route (`"GET /v1/health"`). Undeclared routes fail at import."""
        declared = declaration.route(route_key)
        if declared is None or declared.function != self.function:
            raise ValueError(f"{route_key!r} is not declared for function {self.function!r}")
        rule = re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", r"<\1>", declared.path)
        security = None if declared.scope is None else [{"bearerAuth": [declared.scope]}]
        return self.route(  # type: ignore[return-value]
            rule,
            declared.method,
            summary=declared.summary,
            tags=[self.function],
            security=security,
            operation_id=f"{self.function}_{declared.method.lower()}_{rule.strip('/').replace('/', '_')}",
            **kwargs,
        )

    def served_route_keys(self) -> set[str]:
        """`METHOD /path` for every route this app serves (the declaration test compares these)."""
        keys = set()
        for route in self._static_routes + self._dynamic_routes:
            path = re.sub(r"<([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", route.path)
            keys.add(f"{route.method.upper()} {path}")
        return keys

    # --- the Lambda entry point -----------------------------------------------------------------

    def lambda_handler(self, event: dict[str, Any], context_: Any) -> dict[str, Any]:
        global _cold_start
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        http = (event.get("requestContext") or {}).get("http") or {}
        method = str(http.get("method", "GET")).upper()
        path = str(event.get("rawPath") or http.get("path") or "/")
        supplied = headers.get("x-correlation-id") or headers.get("x-request-id") or ""
        self.correlation_id = supplied if _CORRELATION_ID.match(supplied) else str(uuid.uuid4())
        incoming = headers.get("traceparent", "")
        incoming = incoming if _TRACEPARENT.match(incoming) else ""
        sampling = sample_trace(incoming or None)
        self.traceparent = with_sampled_flag(incoming or context.new_traceparent(), sampling.sampled)
        self.identity = None
        route_key = str(event.get("routeKey") or "")
        declared = declaration.route(route_key) or declaration.match(method, path).route
        request = self.request_info = RequestInfo(event, method, path, declared)
        request_context = context.RequestContext(
            correlation_id=self.correlation_id,
            traceparent=self.traceparent,
            source_ip=str(http.get("sourceIp", "")),
            user_agent=str(http.get("userAgent", "") or headers.get("user-agent", "")),
            route=request.route_key,
        )
        context.set_current(request_context)

        logger = get_logger()
        logger.append_keys(
            correlation_id=self.correlation_id,
            cold_start=_cold_start,
            trace_id=self.traceparent.split("-")[1],
            method=method,
            path=path,
            user=None,  # set once the caller is known; None keys are left out of the line
        )
        _cold_start = False
        with events.batch():
            try:
                self._check_request(event, method, path, declared, headers)
                if self.identity is not None:
                    request.identity = self.identity
                    logger.append_keys(user=self.identity.sub)
                    context.set_current(
                        request_context._replace(
                            sub=self.identity.sub, tenant=self.identity.tenant, tier=self.identity.tier
                        )
                    )
                self._run_before_hooks(request)
                tracer = get_tracer()
                if tracer is None:
                    response = self.resolve(event, context_)
                else:
                    response = traced(
                        tracer,
                        f"## {method} {path}",
                        sampling,
                        lambda: self.resolve(event, context_),
                        lambda: request.error,
                    )
            except UnderlayError as error:
                response = self._problem_event(error, path)
            except Exception as error:  # settings that fail validation, and anything the resolver let through
                response = self._problem_event(self._unexpected(error), path)

            status = int(response.get("statusCode", 500))
            if keep_trace(sampling, status):  # errors are always sampled
                self.traceparent = with_sampled_flag(self.traceparent, True)
            out_headers = response.setdefault("headers", {})
            out_headers["X-Correlation-ID"] = self.correlation_id
            out_headers["traceparent"] = self.traceparent
            out_headers.update(self._cors_headers(headers.get("origin")))
            self._run_after_hooks(request, status, out_headers)
        self._finish(request, route_key if route_key and route_key != "$default" else path, status)
        return response

    def _finish(self, request: RequestInfo, route: str, status: int) -> None:
        """The access-log line and the request metrics; then the request's log keys end with it, so a line
        outside a request (a worker batch in the local stack, a background flush) never carries its caller."""
        logger = get_logger()
        latency_ms = round((time.perf_counter() - request.started) * 1000, 2)
        logger.info("request", extra={"route": route, "status": status, "latency_ms": latency_ms})
        self._emit_request_metrics(status, latency_ms)
        logger.remove_keys(["correlation_id", "trace_id", "method", "path", "user"])

    def _run_before_hooks(self, request: RequestInfo) -> None:
        for hook in self.hooks:
            try:
                hook.before(request)
            except UnderlayError:
                raise
            except Exception:
                get_logger().exception("request hook failed", extra={"hook": type(hook).__name__})

    def _run_after_hooks(self, request: RequestInfo, status: int, headers: dict[str, str]) -> None:
        for hook in self.hooks:
            try:
                hook.after(request, status, headers)
            except Exception:
                get_logger().exception("request hook failed", extra={"hook": type(hook).__name__})

    # --- checks before any handler --------------------------------------------------------------

    def _check_request(
        self,
        event: dict[str, Any],
        method: str,
        path: str,
        declared: declaration.Route | None,
        headers: dict[str, str],
    ) -> None:
        from underlay.settings import get_settings

        settings = get_settings()
        if declared is None:
            return  # the resolver answers 404 or 405 from the declaration
        body = event.get("body")
        if body:
            size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode())
            if size > settings.http.max_body_bytes:
                raise PayloadTooLargeError(
                    f"The body is {size} bytes; the limit is {settings.http.max_body_bytes}."
                )
            if method in _BODY_METHODS:
                if not _is_json(headers.get("content-type", "")):
                    raise UnsupportedMediaTypeError("Send the body as application/json.")
                try:
                    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body
                    json.loads(raw)
                except ValueError as exc:
                    raise MalformedBodyError("The body is not valid JSON.") from exc
        if declared.public:
            return
        context = ((event.get("requestContext") or {}).get("authorizer") or {}).get("lambda") or {}
        if not context:
            raise UnauthorizedError("A bearer token is required.", code="TOKEN_MISSING")
        if context.get("auth_error"):
            # The authorizer lets a rejected request through only to have it answered here as problem+json.
            status = int(context.get("auth_status", 401))
            detail = str(context.get("auth_detail") or "The token is not valid.")
            if status == 403:
                raise InsufficientScopeError(declared.scope or "")
            raise UnauthorizedError(detail, code=str(context["auth_error"]))
        self.identity = RequestIdentity(context)
        if not self.identity.sub:
            raise UnauthorizedError("The token has no subject.", code="TOKEN_INVALID")
        if not declaration.has_scope(self.identity.scopes, declared.scope):
            raise InsufficientScopeError(declared.scope or "")

    def _cors_headers(self, origin: str | None) -> dict[str, str]:
        if not origin:
            return {}
        from underlay.settings import get_settings

        try:
            allowed = get_settings().http.cors_origins
        except Exception:
            return {}
        if "*" in allowed:
            return {"Access-Control-Allow-Origin": "*"}
        if origin in allowed:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    # --- errors ---------------------------------------------------------------------------------

    def problem_response(self, error: UnderlayError) -> Response:
        rendered = problem(error, instance=self._instance(), correlation_id=self.correlation_id)
        return Response(
            status_code=rendered.status,
            content_type=PROBLEM_CONTENT_TYPE,
            body=rendered.json(),
            headers=rendered.headers,
        )

    def _problem_event(self, error: UnderlayError, path: str) -> dict[str, Any]:
        rendered = problem(error, instance=path, correlation_id=self.correlation_id)
        return {
            "statusCode": rendered.status,
            "headers": {"Content-Type": PROBLEM_CONTENT_TYPE, **rendered.headers},
            "body": rendered.json(),
            "isBase64Encoded": False,
        }

    def _instance(self) -> str:
        try:
            return str(self.current_event.raw_path)
        except Exception:
            return "/"

    def _on_underlay_error(self, error: UnderlayError) -> Response:
        if error.status >= 500:
            get_logger().warning("dependency problem", extra={"code": error.code, "detail": error.detail})
        return self.problem_response(error)

    def _on_validation_error(self, error: RequestValidationError) -> Response:
        errors = field_errors_from_pydantic(error.errors())
        return self.problem_response(ValidationFailedError("The request is not valid.", errors=errors))

    def _on_unexpected_error(self, error: Exception) -> Response:
        return self.problem_response(self._unexpected(error))

    def _unexpected(self, error: Exception) -> UnderlayError:
        from pydantic import ValidationError

        if self.request_info is not None:
            self.request_info.error = error
        if isinstance(error, ValidationError) and error.title == "Settings":
            # Logged once per load attempt, with every bad field, by `underlay.config.runtime`; not per request.
            return ConfigInvalidError("The service configuration is invalid; see the logs for the fields.")
        get_logger().exception("unhandled error")
        return UnderlayError("An unexpected error occurred.")

    def _on_not_found(self, _: Exception) -> Response:
        event = self.current_event
        matched = declaration.match(event.request_context.http.method, event.raw_path)
        if matched.allowed and matched.route is None:
            return self.problem_response(
                MethodNotAllowedError(event.request_context.http.method, matched.allowed)
            )
        return self.problem_response(NotFoundError(f"No route matches {event.raw_path}."))

    def _emit_request_metrics(self, status: int, duration_ms: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        metrics = get_metrics()
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name=f"Http{status // 100}xx", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=duration_ms)
        metrics.flush_metrics()


def create_app(function: str) -> UnderlayApp:
    """The HTTP app for one declared function."""
    declaration.function(function)  # fail fast on a typo
    return UnderlayApp(function)
