"""The one error hierarchy, and the one place that turns errors into RFC 9457 problem+json.

Raise an `UnderlayError` subclass anywhere; the HTTP app factory renders it with `problem()`.
Status codes follow SPEC.md. Nothing here ever puts a stack trace or a secret into a response.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class UnderlayError(Exception):
    """Base of every error Underlay raises on purpose. Subclasses set `status` and `code`."""

    status: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        self.detail = detail or HTTPStatus(self.status).phrase
        if code:
            self.code = code
        self.headers = headers or {}
        self.errors = errors or []
        super().__init__(self.detail)

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


class BadRequestError(UnderlayError):
    status, code = 400, "BAD_REQUEST"


class MalformedBodyError(BadRequestError):
    code = "MALFORMED_BODY"


class InvalidCursorError(BadRequestError):
    code = "INVALID_CURSOR"


class UnauthorizedError(UnderlayError):
    status, code = 401, "UNAUTHORIZED"

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        # RFC 6750: tell the client which scheme, and that the token (not the request) is the problem.
        challenge = 'Bearer realm="underlay"'
        if code and code != "TOKEN_MISSING":
            challenge += ', error="invalid_token"'
        super().__init__(detail, code=code, headers={"WWW-Authenticate": challenge})


class ForbiddenError(UnderlayError):
    status, code = 403, "FORBIDDEN"


class InsufficientScopeError(ForbiddenError):
    code = "INSUFFICIENT_SCOPE"

    def __init__(self, required: str) -> None:
        super().__init__(f"This route requires the scope '{required}'.")
        self.headers = {
            "WWW-Authenticate": f'Bearer realm="underlay", error="insufficient_scope", scope="{required}"'
        }


class NotFoundError(UnderlayError):
    status, code = 404, "NOT_FOUND"


class MethodNotAllowedError(UnderlayError):
    status, code = 405, "METHOD_NOT_ALLOWED"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"{method} is not allowed here; use {', '.join(allowed)}.", headers={"Allow": ", ".join(allowed)}
        )


class ConflictError(UnderlayError):
    status, code = 409, "CONFLICT"


class PayloadTooLargeError(UnderlayError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaTypeError(UnderlayError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class ValidationFailedError(UnderlayError):
    status, code = 422, "VALIDATION_FAILED"


class RateLimitedError(UnderlayError):
    status, code = 429, "RATE_LIMITED"

    def __init__(self, retry_after_seconds: int, detail: str | None = None) -> None:
        super().__init__(
            detail or "Too many requests.", headers={"Retry-After": str(max(1, retry_after_seconds))}
        )


class DependencyUnavailableError(UnderlayError):
    status, code = 503, "DEPENDENCY_UNAVAILABLE"


class ConfigInvalidError(DependencyUnavailableError):
    code = "CONFIG_INVALID"


class CircuitOpenError(DependencyUnavailableError):
    """An external service's circuit is open (`underlay.breaker`): fail fast, and say when to retry."""

    def __init__(self, service: str, retry_after_seconds: float) -> None:
        self.service = service
        super().__init__(
            f"The {service} service is unavailable; try again later.",
            headers={"Retry-After": str(max(1, math.ceil(retry_after_seconds)))},
        )


@dataclass(slots=True)
class Problem:
    """A rendered problem: status, headers and the JSON body."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> str:
        return json.dumps(self.body, separators=(",", ":"))


def problem(error: UnderlayError, *, instance: str, correlation_id: str) -> Problem:
    """Render an error as RFC 9457 problem+json. The single mapping from errors to responses."""
    body: dict[str, Any] = {
        "type": f"urn:underlay:problem:{error.code.lower().replace('_', '-')}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
        "code": error.code,
        "correlation_id": correlation_id,
    }
    if error.status == 422 or error.errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in error.errors]
    return Problem(error.status, body, dict(error.headers))


def field_errors_from_pydantic(errors: Any) -> list[FieldError]:
    """pydantic/Powertools validation errors → `[{"field", "message"}]`, field paths dotted, no input echoed."""
    result = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        message = str(err.get("msg", "invalid"))
        # A model-level check names the field it is about as "<dotted.path>: why" (`rules.2.serve.variant: ...`).
        named = _NAMED_FIELD.match(message.removeprefix("Value error, "))
        if named:
            loc.append(named.group(1))
            message = named.group(2)
        result.append(FieldError(".".join(loc) or "body", message))
    return result


_NAMED_FIELD = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*): (.+)$", re.DOTALL)
