"""What every request, job attempt and failure leaves behind for the admin API: RED metrics, rate-limit refusals
and error groups, written in one pipelined round trip.

- `hook` (listed in `http.REQUEST_HOOKS`): after each request of every API function, counts it for
  `GET /v1/metrics` (unless `admin.metrics_enabled` is off) and, when a flush is due (see `underlay.admin.metrics`)
  or the request hit an unexpected exception (`RequestInfo.error`, a 500), writes the counts, the rate-limit
  refusals and the error's group in one pipelined round trip. A 5xx also counts the EMF metric `ServerErrors` by
  function (the per-function 5xx-rate alarm).
- `record_job` (called by the job worker): counts a finished attempt by outcome (`jobs_total` and the EMF
  metrics `JobSucceeded`, `JobFailed`, `JobRetried`, `JobCancelled`) and records a failure's error group.
- `record_failure` (subscription handlers, the stream and SNS consumers): an unexpected error outside a request
  or a job goes to its error group (source `subscription:<name>`, `audit_archive`, ...) and to Sentry.
- `record_occurrence`: the one way all three (and the tests) write an occurrence and detect a spike.

Redis trouble never fails a request or a job: the write is skipped while the shared breaker is open, a failed one
is counted (`AdminRecordDropped`, EMF) and logged, and the request goes on. Neither does an invalid configuration:
the hook then records nothing (the 503 `CONFIG_INVALID` is logged once, with the fields, where it is raised).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from redis.client import Pipeline
    from underlay.http import RequestInfo

T = TypeVar("T")
_JOB_METRICS = {
    "succeeded": "JobSucceeded",
    "failed": "JobFailed",
    "retried": "JobRetried",
    "cancelled": "JobCancelled",
}
dropped = 0  # writes this process could not make (Redis down or erroring)


def _dropped(error: BaseException | None) -> None:
    global dropped
    from underlay.observability import emit_metric

    dropped += 1
    emit_metric("AdminRecordDropped")
    if error is not None:  # while the breaker is open, it has said so already: no line per request
        from underlay.observability import get_logger

        get_logger().warning("admin metrics not recorded", extra={"error": type(error).__name__})


def redis_round_trip(queue: Callable[[Pipeline], T]) -> tuple[list[Any] | None, T | None]:
    """Queue writes with `queue(pipe)` and send them in one pipelined round trip (no transaction).

    Returns (the replies, what `queue` returned), or (None, None) when Redis is not configured, its breaker is
    open or it failed: swallowed and counted, never raised."""
    from underlay import redis_client
    from underlay.settings import get_settings

    if not get_settings().redis.configured:
        return None, None
    breaker = redis_client.breaker()
    if not breaker.allow():
        _dropped(None)
        return None, None
    try:
        pipe = redis_client.get_redis().pipeline(transaction=False)
        queued = queue(pipe)
        replies = pipe.execute() if len(pipe) else []
    except Exception as error:
        if not isinstance(error, redis_client.errors()):
            raise
        breaker.failure(error)
        _dropped(error)
        return None, None
    breaker.success()
    return replies, queued


def redis_read(read: Callable[[], T]) -> T:
    """Run a read for an admin answer; Redis down or not configured is `DependencyUnavailableError` (503)."""
    from underlay.redis_client import guarded

    return guarded(read)


def record_occurrence(
    error: BaseException,
    source: str,
    *,
    also: Callable[[Pipeline], object] | None = None,
    correlation_id: str | None = None,
    now: float | None = None,
) -> bool:
    """Count one occurrence of `error` in its group, with whatever `also(pipe)` queues, in one round trip; the
    writer that brought the group's hour count to the threshold reports the spike (`errors.check_spike`).

    `source` is the route key, `job:<type>`, `subscription:<name>` or a consumer's name; the correlation id is
    the current context's unless given. Returns whether the write was made: False when Redis is not configured,
    its breaker is open or it failed (counted as dropped, never raised)."""
    from underlay import context
    from underlay.admin import errors
    from underlay.admin.settings import admin_settings

    cfg = admin_settings()
    found = errors.occurrence(
        error, source, context.current().correlation_id if correlation_id is None else correlation_id
    )
    when = time.time() if now is None else now

    def queue(pipe: Pipeline) -> int:
        if also is not None:
            also(pipe)
        return errors.queue(pipe, found, when, cfg)

    replies, index = redis_round_trip(queue)
    if replies is None or index is None:
        return False
    errors.check_spike(found, replies[index], cfg)
    return True


class RequestRecorder:
    """The admin request hook: RED metrics, rate-limit refusals and error groups, one round trip per request."""

    def before(self, request: RequestInfo) -> None:
        return None

    def after(self, request: RequestInfo, status: int, headers: dict[str, str]) -> None:
        from pydantic import ValidationError
        from underlay.admin import metrics
        from underlay.observability import emit_metric
        from underlay.settings import get_settings

        if status >= 500 and request.route is not None:  # a 503 CONFIG_INVALID counts too
            emit_metric("ServerErrors", function=request.route.function)
        try:
            settings = get_settings()
        except ValidationError:  # said once, with the fields, where it is raised: no line per request here
            return
        cfg = settings.admin
        if not settings.redis.configured:
            return
        error = request.error
        if cfg.metrics_enabled:
            method, route = metrics.route_labels(request.method, request.route)
            metrics.count_request(method, route, status, time.perf_counter() - request.started)
        if error is None and not metrics.flush_due(cfg):
            return
        counts = metrics.take_counts()

        def queue_counts(pipe: Pipeline) -> None:
            metrics.queue_counts(pipe, counts, cfg)

        if error is None:
            written = redis_round_trip(queue_counts)[0] is not None
        else:
            written = record_occurrence(error, request.route_key, also=queue_counts)
        if not written:
            metrics.restore_counts(counts)


def record_job(job_type: str, outcome: str, error: BaseException | None = None) -> None:
    """A job attempt finished (`succeeded`, `failed`, `retried` or `cancelled`); never raises."""
    from underlay.observability import get_logger

    try:
        from underlay.admin import metrics
        from underlay.admin.settings import admin_settings
        from underlay.observability import emit_metric

        cfg = admin_settings()
        emit_metric(_JOB_METRICS.get(outcome, "JobFinished"))

        def queue_job(pipe: Pipeline) -> None:
            if cfg.metrics_enabled:
                metrics.queue_job(pipe, job_type, outcome, cfg)

        if error is not None:
            record_occurrence(error, f"job:{job_type}", also=queue_job)
        elif cfg.metrics_enabled:
            redis_round_trip(queue_job)
    except Exception:
        get_logger().exception("recording a job outcome failed", extra={"job_type": job_type})


def record_failure(source: str, error: BaseException, *, report: bool = True, **tags: str) -> None:
    """An unexpected error outside a request or a job (`source`: `subscription:<name>`, `audit_archive`, ...):
    an occurrence of its error group and, when `report`, a Sentry event (sent before returning: Lambda may
    freeze the instance right after). Never raises, so the caller re-raises its own error for Lambda to retry."""
    from underlay.observability import get_logger

    try:
        record_occurrence(error, source)
    except Exception as failure:  # an invalid configuration, say: the caller's error matters more
        get_logger().warning(
            "error group not recorded", extra={"source": source, "error": type(failure).__name__}
        )
    if not report:
        return
    try:
        from underlay import sentry

        if sentry.capture_exception(error, source=source, **tags) is not None:
            sentry.flush(timeout=1.0)
    except Exception as failure:
        get_logger().warning(
            "error not sent to Sentry", extra={"source": source, "error": type(failure).__name__}
        )


hook = RequestRecorder()
