"""What every request and every job attempt leaves behind for the admin API: RED metrics, rate-limit refusals and
error groups, written in one pipelined round trip.

- `hook` (listed in `http.REQUEST_HOOKS`): after each request of every API function, counts it for
  `GET /v1/metrics` (unless `admin.metrics_enabled` is off) and, when a flush is due (see `underlay.admin.metrics`)
  or the request hit an unexpected exception (`RequestInfo.error`, a 500), writes the counts, the rate-limit
  refusals and the error's group in one pipelined round trip. A 5xx also counts the EMF metric `ServerErrors` by
  function (the per-function 5xx-rate alarm).
- `record_job` (called by the job worker): counts a finished attempt by outcome (`jobs_total` and the EMF
  metrics `JobSucceeded`, `JobFailed`, `JobRetried`, `JobCancelled`) and records a failure's error group.

Redis trouble never fails a request or a job: the write is skipped while the shared breaker is open, a failed one
is counted (`AdminRecordDropped`, EMF) and logged, and the request goes on.
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
    from underlay.admin.metrics import emit

    dropped += 1
    emit("AdminRecordDropped")
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


class RequestRecorder:
    """The admin request hook: RED metrics, rate-limit refusals and error groups, one round trip per request."""

    def before(self, request: RequestInfo) -> None:
        return None

    def after(self, request: RequestInfo, status: int, headers: dict[str, str]) -> None:
        from underlay.admin import errors, metrics
        from underlay.settings import get_settings

        settings = get_settings()
        cfg = settings.admin
        if status >= 500 and request.route is not None:
            metrics.emit("ServerErrors", function=request.route.function)
        if not settings.redis.configured:
            return
        error = request.error
        if cfg.metrics_enabled:
            method, route = metrics.route_labels(request.method, request.route)
            metrics.count_request(method, route, status, time.perf_counter() - request.started)
        if error is None and not metrics.flush_due(cfg):
            return
        counts = metrics.take_counts()
        found = None
        now = time.time()
        if error is not None:
            from underlay import context

            found = errors.occurrence(error, request.route_key, context.current().correlation_id)

        def queue(pipe: Pipeline) -> int | None:
            metrics.queue_counts(pipe, counts, cfg)
            return errors.queue(pipe, found, now, cfg) if found is not None else None

        replies, index = redis_round_trip(queue)
        if replies is None:
            metrics.restore_counts(counts)
            return
        if found is not None and index is not None:
            errors.check_spike(found, replies[index], cfg)


def record_job(job_type: str, outcome: str, error: BaseException | None = None) -> None:
    """A job attempt finished (`succeeded`, `failed`, `retried` or `cancelled`); never raises."""
    from underlay.observability import get_logger

    try:
        from underlay import context
        from underlay.admin import errors, metrics
        from underlay.admin.settings import admin_settings

        cfg = admin_settings()
        metrics.emit(_JOB_METRICS.get(outcome, "JobFinished"))
        found = None
        if error is not None:
            found = errors.occurrence(error, f"job:{job_type}", context.current().correlation_id)
        if not cfg.metrics_enabled and found is None:
            return
        now = time.time()

        def queue(pipe: Pipeline) -> int | None:
            if cfg.metrics_enabled:
                metrics.queue_job(pipe, job_type, outcome, cfg)
            return errors.queue(pipe, found, now, cfg) if found is not None else None

        replies, index = redis_round_trip(queue)
        if replies is not None and found is not None and index is not None:
            errors.check_spike(found, replies[index], cfg)
    except Exception:
        get_logger().exception("recording a job outcome failed", extra={"job_type": job_type})


hook = RequestRecorder()
