"""Health checks for the whole stack, in the `application/health+json` format (draft-inadarei-api-health-check).

Every component is checked in parallel with its own timeout. A critical component failing fails the service;
a non-critical one (or a measurement over its threshold) only warns. Results are cached per instance for a few
seconds, so probes cannot hammer dependencies. Later domains add checkers with `register_checker`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from underlay import declaration
from underlay.settings import Settings, get_settings

Status = Literal["pass", "warn", "fail"]
Group = Literal["database", "cache", "services", "jobs"]
HEALTH_CONTENT_TYPE = "application/health+json"
_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}

_CHECK_SCHEMA = {
    "type": "object",
    "required": ["status", "time"],
    "properties": {
        "status": {"enum": ["pass", "warn", "fail"]},
        "observedValue": {},
        "observedUnit": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "output": {"type": "string"},
    },
}
HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"enum": ["pass", "warn", "fail"]},
        "version": {"type": "string"},
        "releaseId": {"type": "string"},
        "serviceId": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "checks": {"type": "object", "additionalProperties": {"type": "array", "items": _CHECK_SCHEMA}},
    },
}
OPENAPI_RESPONSES: dict[int, Any] = {
    200: {"description": "pass or warn", "content": {HEALTH_CONTENT_TYPE: {"schema": HEALTH_SCHEMA}}},
    503: {"description": "fail", "content": {HEALTH_CONTENT_TYPE: {"schema": HEALTH_SCHEMA}}},
}


class Check(NamedTuple):
    """One entry of `checks["component:measurement"]`."""

    component: str  # e.g. "redis", "dynamodb:flags"
    measurement: str  # e.g. "responseTime"
    status: Status
    observed_value: float | int | str | None = None
    observed_unit: str | None = None
    output: str | None = None

    def document(self, now: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status, "time": now}
        if self.observed_value is not None:
            doc["observedValue"] = self.observed_value
        if self.observed_unit:
            doc["observedUnit"] = self.observed_unit
        if self.output:
            doc["output"] = self.output
        return doc


class Checker(NamedTuple):
    name: str  # unique, e.g. "dynamodb:flags"
    group: Group
    kind: str  # the component kind that `health.critical` names: dynamodb, s3, redis, sqs, http
    run: Callable[[Settings], list[Check]]
    critical: bool | None = None  # None: decided by `settings.health.critical`


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, round((time.perf_counter() - started) * 1000, 2)


def _latency(component: str, ms: float, settings: Settings) -> Check:
    status: Status = "warn" if ms > settings.health.latency_warn_ms else "pass"
    return Check(component, "responseTime", status, ms, "ms")


# --- built-in checkers --------------------------------------------------------------------------


def check_redis(settings: Settings) -> list[Check]:
    from underlay.redis_client import breaker, get_redis

    r = get_redis()
    state = breaker().state
    if state != "closed":
        # The cache and limiter are skipping Redis: degraded, whatever this probe finds.
        circuit = Check(
            "redis", "circuit", "warn", state, output="cache and rate limiter serving without Redis"
        )
    else:
        circuit = Check("redis", "circuit", "pass", state)
    try:
        _, ms = _timed(r.ping)
    except Exception as exc:
        return [circuit, Check("redis", "status", "fail", output=f"{type(exc).__name__}: {str(exc)[:200]}")]
    info = r.info()
    used, peak_max = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    checks = [_latency("redis", ms, settings), circuit, Check("redis", "usedMemory", "pass", used, "bytes")]
    if peak_max:
        ratio = used / peak_max
        checks.append(
            Check("redis", "memoryUtilization", "warn" if ratio > 0.9 else "pass", round(ratio, 4), "ratio")
        )
    checks.append(Check("redis", "keyspaceHits", "pass", hits, "count"))
    checks.append(Check("redis", "keyspaceMisses", "pass", misses, "count"))
    return checks


def _table_checker(logical: str) -> Callable[[Settings], list[Check]]:
    def run(settings: Settings) -> list[Check]:
        from underlay.aws import client

        name = settings.resource("table", logical)
        if not name:
            return [Check(f"dynamodb:{logical}", "status", "fail", output="table not configured")]
        described, ms = _timed(lambda: client("dynamodb").describe_table(TableName=name))
        state = described["Table"]["TableStatus"]
        status: Status = "pass" if state == "ACTIVE" else "warn" if state == "UPDATING" else "fail"
        return [_latency(f"dynamodb:{logical}", ms, settings)._replace(status=status, output=state)]

    return run


def _bucket_checker(logical: str) -> Callable[[Settings], list[Check]]:
    def run(settings: Settings) -> list[Check]:
        from underlay.aws import client

        name = settings.resource("bucket", logical)
        if not name:
            return [Check(f"s3:{logical}", "status", "fail", output="bucket not configured")]
        _, ms = _timed(lambda: client("s3").head_bucket(Bucket=name))
        return [_latency(f"s3:{logical}", ms, settings)]

    return run


def _queue_checker(queue: declaration.Queue) -> Callable[[Settings], list[Check]]:
    def depth(url: str) -> int:
        from underlay.aws import client

        attrs = client("sqs").get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    def run(settings: Settings) -> list[Check]:
        url, dlq_url = settings.resource("queue", queue.name), settings.resource("queue", queue.dlq_name)
        if not url or not dlq_url:
            return [Check(f"sqs:{queue.name}", "status", "fail", output="queue not configured")]
        (visible, ms), dead = _timed(lambda: depth(url)), depth(dlq_url)
        limit, dlq_limit = settings.health.queue_warn_threshold, settings.health.dlq_warn_threshold
        return [
            _latency(f"sqs:{queue.name}", ms, settings),
            Check(f"sqs:{queue.name}", "depth", "warn" if visible >= limit else "pass", visible, "messages"),
            Check(f"sqs:{queue.name}", "dlqDepth", "warn" if dead >= dlq_limit else "pass", dead, "messages"),
        ]

    return run


def _http_checker(url: str, timeout: float) -> Callable[[Settings], list[Check]]:
    """GET the service's URL through its circuit breaker (`underlay.breaker`, shared with the app's own calls):
    while the circuit is open the check fails without calling; a 5xx or a network error counts as a failure."""

    def run(settings: Settings) -> list[Check]:
        import urllib.error
        import urllib.request

        from underlay.breaker import get_breaker
        from underlay.errors import CircuitOpenError

        name = next(s.name for s in settings.health.external_services if s.url == url)

        def get() -> int:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) only, validated)
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        try:
            with get_breaker(name).guard() as call:
                code, ms = _timed(get)
                if code >= 500:
                    call.failed()
        except CircuitOpenError as exc:
            return [
                Check(
                    f"http:{name}",
                    "circuit",
                    "fail",
                    "open",
                    output=f"circuit open after repeated failures; next try in {exc.headers['Retry-After']}s",
                )
            ]
        check = _latency(f"http:{name}", ms, settings)._replace(output=f"HTTP {code}")
        return [check._replace(status="fail") if code >= 400 else check]

    return run


_extra: list[Checker] = []


def register_checker(checker: Checker) -> None:
    """Let later domains (flags, jobs, ...) add their components to the whole-stack health."""
    _extra[:] = [c for c in _extra if c.name != checker.name] + [checker]
    _cache.clear()


def checkers(settings: Settings) -> list[Checker]:
    found: list[Checker] = [Checker("redis", "cache", "redis", check_redis)]
    found += [
        Checker(f"dynamodb:{t.name}", "database", "dynamodb", _table_checker(t.name))
        for t in declaration.TABLES
    ]
    found += [Checker(f"s3:{b.name}", "database", "s3", _bucket_checker(b.name)) for b in declaration.BUCKETS]
    found += [Checker(f"sqs:{q.name}", "jobs", "sqs", _queue_checker(q)) for q in declaration.QUEUES]
    timeout = settings.health.check_timeout_seconds
    found += [
        Checker(f"http:{s.name}", "services", "http", _http_checker(s.url, timeout), critical=s.critical)
        for s in settings.health.external_services
    ]
    return found + list(_extra)


# --- running ------------------------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_cache: dict[str, tuple[float, HealthReport]] = {}


class HealthReport(NamedTuple):
    status: Status
    checks: list[tuple[Check, bool]]  # (check, critical)
    time: str

    def document(self, settings: Settings, *, detailed: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "status": self.status,
            "version": settings.version.split(".")[0],
            "releaseId": settings.release_id,
            "serviceId": f"{settings.service}-{settings.stage}",
            "description": f"{settings.service} ({settings.stage})",
            "time": self.time,
            "checks": {},
        }
        for check, critical in self.checks:
            entry: dict[str, Any] = (
                check.document(self.time) if detailed else {"status": check.status, "time": self.time}
            )
            if detailed:
                entry["componentType"] = "datastore" if critical else "component"
                entry["critical"] = critical
            doc["checks"].setdefault(f"{check.component}:{check.measurement}", []).append(entry)
        return doc

    @property
    def http_status(self) -> int:
        return 503 if self.status == "fail" else 200


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="health")
        return _pool


def _is_critical(checker: Checker, settings: Settings) -> bool:
    return checker.critical if checker.critical is not None else checker.kind in settings.health.critical


def _run_one(checker: Checker, settings: Settings) -> list[Check]:
    try:
        return checker.run(settings)
    except Exception as exc:  # a check reports a failure; it never raises into the response
        return [Check(checker.name, "status", "fail", output=f"{type(exc).__name__}: {str(exc)[:200]}")]


def run_checks(groups: Iterable[Group] | None = None, *, only_critical: bool = False) -> HealthReport:
    """Run (or reuse from the per-instance cache) the checks of the given groups, in parallel."""
    settings = get_settings()
    wanted = set(groups) if groups is not None else {"database", "cache", "services", "jobs"}
    cache_key = f"{sorted(wanted)}:{only_critical}"
    cached = _cache.get(cache_key)
    if cached and time.monotonic() - cached[0] < settings.health.cache_seconds:
        return cached[1]

    selected = [c for c in checkers(settings) if c.group in wanted]
    if only_critical:
        selected = [c for c in selected if _is_critical(c, settings)]
    timeout = settings.health.check_timeout_seconds
    futures: list[tuple[Checker, Future[list[Check]]]] = [
        (c, _executor().submit(_run_one, c, settings)) for c in selected
    ]
    wait_all([f for _, f in futures], timeout=timeout)
    results: list[tuple[Check, bool]] = []
    for checker, future in futures:
        critical = _is_critical(checker, settings)
        if future.done():
            results.extend((check, critical) for check in future.result())
        else:
            future.cancel()
            results.append(
                (Check(checker.name, "status", "fail", output=f"timed out after {timeout}s"), critical)
            )

    overall: Status = "pass"
    for check, critical in results:
        effective: Status = "warn" if check.status == "fail" and not critical else check.status
        if _RANK[effective] > _RANK[overall]:
            overall = effective
    report = HealthReport(overall, results, now())
    _cache[cache_key] = (time.monotonic(), report)
    return report


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def clear_cache() -> None:
    _cache.clear()


HISTORY_CURSOR_SCOPE = "health:history"


def history(limit: int, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Snapshots written by the scheduled `health.snapshot` job, newest first, one page at a time.

    A Query on the `snapshot` partition (never a Scan); `cursor` is the signed `next_cursor` of the previous page.
    """
    from underlay import pagination
    from underlay.aws import client

    table = get_settings().resource("table", "health_history")
    start = pagination.decode(cursor, HISTORY_CURSOR_SCOPE) if cursor else None
    if not table:
        return [], None
    response = client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "snapshot"}},
        ScanIndexForward=False,
        Limit=limit,
        **({"ExclusiveStartKey": start} if start else {}),
    )
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    items = [{k: deserializer.deserialize(v) for k, v in item.items()} for item in response.get("Items", [])]
    return items, pagination.encode(response.get("LastEvaluatedKey"), HISTORY_CURSOR_SCOPE)
