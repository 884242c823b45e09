"""Sentry error reporting, optional: with no DSN configured it is a no-op and `sentry_sdk` is never imported.

The DSN comes from Secrets Manager (`observability.sentry_dsn_secret_arn`, read once through Powertools
Parameters, as a plain string or `{"dsn": ...}`) or, for local work, `UNDERLAY_OBSERVABILITY__SENTRY_DSN`.
`init_sentry()` runs once per process, lazily, on the first request (or the first `capture_exception`), so the
cold start of a function without Sentry pays nothing and one with it pays the import on its first request.

What is sent: environment = stage, release = version, `traces_sample_rate` from
`observability.sentry_traces_sample_rate` (else `trace_sample_rate`), `send_default_pii=False`, and every event,
transaction and breadcrumb passes through `underlay.observability.redact` (headers, cookies, extra, contexts,
breadcrumbs, exception messages), with the correlation id and route as tags. Frame locals are not sent.

The HTTP factory turns every exception into a 500, so nothing escapes to Sentry's Lambda integration from an API
function: `hook` (in `underlay.http.REQUEST_HOOKS`) captures the unexpected error behind a 500
(`RequestInfo.error`). Elsewhere call `capture_exception(exc)`: the job worker does for a job's final failure, and
subscription handlers and the stream and SNS consumers go through `underlay.admin.recorder.record_failure` (the
error group, then Sentry, flushed). The Lambda integration is still enabled on Lambda for what it adds: the
invocation context and timeout warnings.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from underlay import context
from underlay.observability import get_logger, redact

if TYPE_CHECKING:
    from underlay.http import RequestInfo

_RETRY_SECONDS = 60.0  # after the DSN secret could not be read, try again at most this often
_FLUSH_SECONDS = 1.0  # the most a 500 waits for its event to be sent
_lock = threading.Lock()
_enabled: bool | None = None  # None: not decided yet
_retry_at = 0.0
_transport: Any = None  # tests: a sentry_sdk Transport that captures instead of sending


def _dsn() -> str | None:
    from underlay.config.secrets import fetch
    from underlay.settings import get_settings

    cfg = get_settings().observability
    if cfg.sentry_dsn is not None:
        return cfg.sentry_dsn.get_secret_value() or None
    if not cfg.sentry_dsn_secret_arn:
        return None
    return (
        fetch(cfg.sentry_dsn_secret_arn, field="dsn").strip() or None
    )  # a JSON secret's "dsn", or the string


def scrub(event: Any, _hint: Any = None) -> Any:
    """`before_send`/`before_send_transaction`: redact the whole event, and tag it with the current request."""
    scrubbed: dict[str, Any] = redact(event)
    current = context.current()
    tags = scrubbed.get("tags")
    tags = tags if isinstance(tags, dict) else {}
    tags.setdefault("correlation_id", current.correlation_id)
    if current.route:
        tags.setdefault("route", current.route)
    scrubbed["tags"] = tags
    return scrubbed


def _scrub_breadcrumb(crumb: Any, _hint: Any = None) -> Any:
    scrubbed: dict[str, Any] = redact(crumb)
    return scrubbed


def init_sentry() -> bool:
    """Initialise Sentry once per process; False (and nothing imported) when no DSN is configured."""
    global _enabled, _retry_at
    if _enabled is not None:
        return _enabled
    with _lock:
        if _enabled is not None or time.monotonic() < _retry_at:
            return bool(_enabled)
        from pydantic import ValidationError

        try:
            dsn = _dsn()
        except ValidationError:  # invalid settings: said once, with the fields, where raised (CONFIG_INVALID)
            return False
        except Exception as exc:  # the secret could not be read: no Sentry for now, the request goes on
            from underlay.aws import error_code

            _retry_at = time.monotonic() + _RETRY_SECONDS
            # The type and AWS error code only: an exception's text may carry values (a secret, an input).
            get_logger().warning(
                "sentry off for now: the DSN could not be read",
                extra={"error": type(exc).__name__, "error_code": error_code(exc)},
            )
            return False
        if dsn is None:
            _enabled = False
            return False
        _start(dsn)
        _enabled = True
        return True


def _start(dsn: str) -> None:
    import logging
    import os

    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration
    from underlay.settings import get_settings

    settings = get_settings()
    cfg = settings.observability
    integrations: list[Any] = [
        # Log lines become breadcrumbs (scrubbed), never events: errors are captured explicitly, once.
        LoggingIntegration(level=logging.INFO, event_level=None),
    ]
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        from sentry_sdk.integrations.aws_lambda import AwsLambdaIntegration

        integrations.append(AwsLambdaIntegration(timeout_warning=True))
    sentry_sdk.init(
        dsn=dsn,
        environment=settings.stage,
        release=settings.version,
        traces_sample_rate=(
            cfg.sentry_traces_sample_rate
            if cfg.sentry_traces_sample_rate is not None
            else cfg.trace_sample_rate
        ),
        send_default_pii=False,
        # Frame locals can hold anything (a secret under a harmless name); the stack and message are enough.
        include_local_variables=False,
        before_send=scrub,
        before_send_transaction=scrub,
        before_breadcrumb=_scrub_breadcrumb,
        integrations=integrations,
        # Auto-enabled integrations import every supported library installed (redis.asyncio, botocore, flask
        # locally): ~200 ms on the first request. The defaults (logging, threading, dedupe, ...) stay.
        auto_enabling_integrations=False,
        transport=_transport,
    )
    sentry_sdk.set_tag("service", settings.service)


def capture_exception(exc: BaseException, **tags: str) -> str | None:
    """Report `exc` to Sentry (if configured) with `tags`; returns the event id, or None when off or dropped."""
    if not init_sentry():
        return None
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        for name, value in tags.items():
            scope.set_tag(name, value)
        return sentry_sdk.capture_exception(exc)


class SentryHook:
    """The request hook: initialise on the first request; capture the unexpected error behind a 500."""

    def before(self, request: RequestInfo) -> None:
        init_sentry()

    def after(self, request: RequestInfo, status: int, headers: dict[str, str]) -> None:
        if request.error is None or not init_sentry():
            return
        import sentry_sdk

        with sentry_sdk.new_scope() as scope:
            scope.set_tag("route", request.route_key)
            scope.set_tag("status", str(status))
            scope.set_context(
                "request",
                {
                    "method": request.method,
                    "url": request.path,
                    "headers": redact(dict(request.event.get("headers") or {})),
                },
            )
            if request.identity is not None:
                scope.set_user({"id": request.identity.sub})  # the token subject; no IP, no e-mail
            sentry_sdk.capture_exception(request.error)
        # Send before the response goes: a Lambda instance is frozen after it, with the event still queued.
        sentry_sdk.flush(timeout=_FLUSH_SECONDS)


hook = SentryHook()


def flush(timeout: float = 2.0) -> None:
    """Send queued events now (before a Lambda freezes, or at the end of a test)."""
    if _enabled:
        import sentry_sdk

        sentry_sdk.flush(timeout=timeout)


def reset_sentry() -> None:
    """Forget the decision (tests; settings changed). An initialised client is closed."""
    global _enabled, _retry_at
    with _lock:
        if _enabled:
            import sentry_sdk

            sentry_sdk.get_client().close(timeout=0)
            sentry_sdk.init()  # an inactive client: nothing is sent until init_sentry() runs again
        _enabled, _retry_at = None, 0.0


def use_transport(transport: Any) -> None:
    """Tests: send events to `transport` (a `sentry_sdk.transport.Transport`) instead of the network."""
    global _transport
    _transport = transport
    reset_sentry()
