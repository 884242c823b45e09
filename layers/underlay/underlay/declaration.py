"""The one declaration of Underlay's shape.

Routes (with their function and scope), functions, tables, buckets, queues, the event bus and schedules are
declared here once. The CDK app (`infra/`), the local stack, the OpenAPI document, the authorizer and the HTTP
app factory all read this module, and `tests/unit/test_declaration.py` proves they agree.

This module is imported on every cold start (the authorizer uses it to find a route's scope), so its records
are NamedTuples: a frozen dataclass costs about six times as much to define, and the authorizer has ~150 ms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Literal, NamedTuple

from underlay.subscriptions import SUBSCRIPTIONS

# `append`: write new audit entries only (read the chain head, put an entry and the head in one transaction).
Access = Literal["read", "write", "read_write", "describe", "put_only", "append"]

SCOPES: tuple[str, ...] = (
    "platform:read",
    "platform:admin",
    "cache:admin",
    "flags:read",
    "flags:write",
    "flags:evaluate",
    "config:read",
    "config:write",
    "audit:read",
    "audit:export",
    "jobs:read",
    "jobs:write",
    "metrics:read",
)
ADMIN_SCOPE = "platform:admin"


class Route(NamedTuple):
    """One HTTP route. `scope=None` means public (no authorizer)."""

    method: str
    path: str
    function: str
    scope: str | None
    summary: str

    @property
    def key(self) -> str:
        """The API Gateway route key, e.g. `GET /v1/health`."""
        return f"{self.method} {self.path}"

    @property
    def public(self) -> bool:
        return self.scope is None


class Grant(NamedTuple):
    """What a function may do with a declared resource: a table, bucket, queue, the bus, the jobs' schedule group
    (`scheduler`) or SES sending (`email`). `name` is a declared resource, or "*" for every one of that kind."""

    kind: Literal["table", "bucket", "queue", "bus", "scheduler", "email"]
    name: str  # a declared resource name, or "*" for every resource of that kind
    access: Access


class Function(NamedTuple):
    name: str
    description: str
    memory_mb: int = 256
    timeout_s: int = 10
    needs_redis: bool = False  # placed in the VPC next to ElastiCache
    grants: tuple[Grant, ...] = ()
    table_stream: str | None = None  # consumes this declared table's DynamoDB stream (TTL removals)
    consumes: tuple[str, ...] = ()  # declared queues whose messages invoke it (SQS event sources)
    topic: str | None = None  # a declared SNS topic whose notifications invoke it
    # Reads runtime settings from the config table (issue 5). Only the authorizer does not: it never imports boto3.
    reads_config: bool = True

    @property
    def handler(self) -> str:
        """The Lambda handler string; every function ships the same `functions/` package."""
        return f"functions.{self.name}.app.handler"


class Index(NamedTuple):
    name: str
    partition_key: str
    sort_key: str | None = None


class Table(NamedTuple):
    name: str
    partition_key: str = "pk"
    sort_key: str | None = "sk"
    ttl_attribute: str | None = None
    indexes: tuple[Index, ...] = ()
    description: str = ""


class Bucket(NamedTuple):
    name: str
    object_lock: bool = False
    versioned: bool = False
    description: str = ""


class Queue(NamedTuple):
    """A work queue. Every queue gets a dead-letter queue named `<name>-dlq`."""

    name: str
    # Redelivery cap for messages whose worker crashed; failed jobs go to the DLQ themselves, after the
    # job type's own max attempts (underlay.jobs.worker).
    max_receive_count: int = 10
    worker_timeout_s: int = 300  # visibility timeout is 6x this (SPEC: never a duplicate run on retry)
    max_concurrency: int = 2  # concurrent worker instances for this queue (the SQS event source's cap)
    description: str = ""

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-dlq"

    @property
    def visibility_timeout_s(self) -> int:
        return 6 * self.worker_timeout_s


class Schedule(NamedTuple):
    """A recurring job, deployed as an EventBridge Scheduler schedule."""

    name: str
    cron: str  # six-field EventBridge form without the `cron()` wrapper, e.g. "0 * * * ? *"
    timezone: str
    job_type: str
    payload: Mapping[str, object] = MappingProxyType({})
    overlap: Literal["skip", "allow"] = "skip"


# --- functions ----------------------------------------------------------------------------------

SUBSCRIBER_TIMEOUT_S = 60
JOB_QUEUE_GRANTS = tuple(Grant("queue", f"jobs-{p}", "read_write") for p in ("high", "normal", "low"))

FUNCTIONS: tuple[Function, ...] = (
    Function(
        name="authorizer",
        description="HTTP API Lambda REQUEST authorizer (JWT, JWKS, scopes per route).",
        memory_mb=256,
        timeout_s=5,
        reads_config=False,
    ),
    Function(
        name="health",
        description="Health API: live, ready, details per component, history. Also serves the OpenAPI document.",
        memory_mb=512,
        timeout_s=10,
        needs_redis=True,
        grants=(
            Grant("table", "*", "describe"),
            Grant("table", "health_history", "read"),
            Grant("bucket", "*", "describe"),
            Grant("queue", "*", "describe"),
            Grant("bus", "*", "write"),  # CacheFallbackActivated from the rate limiter's Redis breaker
        ),
    ),
    # --- cache (issue 3: cache and rate limiting) ---
    Function(
        name="cache",
        description="Cache API: statistics, invalidation by key, pattern and tag, warming.",
        memory_mb=256,
        timeout_s=30,
        needs_redis=True,
        grants=(Grant("bus", "*", "write"), Grant("table", "audit", "append")),
    ),
    Function(
        name="admin",
        description="Admin API: platform statistics, error groups, rate-limit resets, Prometheus metrics.",
        memory_mb=256,
        timeout_s=10,
        needs_redis=True,
        grants=(
            Grant("bus", "*", "write"),
            Grant("table", "audit", "append"),
            # --- admin (issue 8): the stats read these (COUNT Queries on indexes, queue depths) ---
            Grant("table", "audit", "read"),
            Grant("table", "flags", "read"),
            Grant("table", "jobs", "read"),
            *(Grant("queue", f"jobs-{p}", "describe") for p in ("high", "normal", "low")),
        ),
    ),
    # --- end of cache ---
    # --- flags (issue 4: feature flags) ---
    Function(
        name="flags",
        description="Feature flags API: flags and segments, evaluate all for a caller, analytics.",
        memory_mb=512,
        timeout_s=15,
        needs_redis=True,  # the version stamp, analytics, the rate limiter
        grants=(
            Grant("table", "flags", "read_write"),
            Grant("table", "audit", "append"),
            Grant("bus", "*", "write"),
        ),
    ),
    # --- end of flags ---
    # --- config (issue 5: configuration) ---
    Function(
        name="config",
        description="Configuration API: effective settings and sources, runtime changes, history, rollback, reload.",
        memory_mb=256,
        timeout_s=15,
        needs_redis=True,  # the rate limiter
        grants=(
            Grant("table", "config", "read_write"),
            Grant("table", "audit", "append"),
            Grant("bus", "*", "write"),
        ),
    ),
    # --- end of config ---
    # --- audit (issue 6: audit log) ---
    Function(
        name="audit",
        description="Audit API: query, export and verify the tamper-evident audit log.",
        memory_mb=512,
        timeout_s=30,
        needs_redis=True,  # the rate limiter
        grants=(
            Grant("table", "audit", "read_write"),  # append-only: PutItem, never Update/Delete
            Grant("bucket", "audit", "read"),
            Grant("bucket", "audit", "put_only"),
            Grant("bus", "*", "write"),
        ),
    ),
    Function(
        name="audit_archive",
        description="Archives audit entries that TTL removes to the audit bucket (gzip JSONL by date).",
        memory_mb=256,
        timeout_s=60,
        needs_redis=True,  # error groups (underlay.admin) live in Redis
        grants=(Grant("bucket", "audit", "put_only"), Grant("bus", "*", "write")),
        table_stream="audit",
    ),
    # --- end of audit ---
    # --- jobs (issue 7: jobs, worker, events, e-mail) ---
    Function(
        name="jobs",
        description="Jobs API: enqueue, inspect, cancel, retry, delete; schedules, dead letters, metrics.",
        memory_mb=256,
        timeout_s=30,
        needs_redis=True,  # the rate limiter
        grants=(
            Grant("table", "jobs", "read_write"),
            *JOB_QUEUE_GRANTS,  # send; peek and redrive the DLQs
            Grant("scheduler", "*", "write"),  # one-time schedules for jobs more than 15 minutes ahead
            Grant("table", "audit", "append"),
            Grant("bus", "*", "write"),
        ),
    ),
    Function(
        name="worker",
        description="Runs background jobs from the priority queues (partial batch responses).",
        memory_mb=512,
        timeout_s=300,  # <= the queues' worker_timeout_s
        needs_redis=True,  # cache jobs
        consumes=("jobs-high", "jobs-normal", "jobs-low"),
        grants=(
            Grant("table", "jobs", "read_write"),
            *JOB_QUEUE_GRANTS,  # visibility changes, DLQ sends
            Grant(
                "table", "audit", "read_write"
            ),  # audit.digest and audit.export (append-only: put, never change)
            Grant("bucket", "audit", "read"),
            Grant("bucket", "audit", "put_only"),
            Grant("table", "health_history", "read_write"),
            Grant("table", "flags", "read_write"),  # flags.stale_scan
            Grant("table", "*", "describe"),  # health.snapshot runs every health check
            Grant("bucket", "*", "describe"),
            Grant("email", "*", "write"),  # email.send: SES SendEmail from the configured identity
            Grant("bus", "*", "write"),
        ),
    ),
    Function(
        name="subscriber",
        description="Runs event-bus subscriptions from their sub-<name> queues (partial batch responses).",
        memory_mb=256,
        timeout_s=SUBSCRIBER_TIMEOUT_S,
        needs_redis=True,  # error groups (underlay.admin) live in Redis
        consumes=tuple(s.queue_name for s in SUBSCRIPTIONS),
        grants=(Grant("table", "audit", "append"), Grant("bus", "*", "write")),  # audit-on-job-failure
    ),
    Function(
        name="email_events",
        description="Suppresses e-mail addresses from SES bounce and complaint notifications (SNS).",
        memory_mb=256,
        timeout_s=30,
        needs_redis=True,  # error groups (underlay.admin) live in Redis
        topic="email-events",
        grants=(Grant("table", "jobs", "write"),),  # PutItem of SUPPRESS# items
    ),
    # --- end of jobs ---
    # --- admin (issue 8: admin, metrics, storage) ---
    # --- end of admin ---
)

# --- routes -------------------------------------------------------------------------------------

_HEALTH_COMPONENT_ROUTES = (
    ("database", "DynamoDB tables and S3 buckets"),
    ("cache", "Redis"),
    ("services", "External HTTP services from config"),
    ("jobs", "Job queues and their dead-letter queues"),
)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", "health", None, "Overall health (public, no component detail)"),
    Route("GET", "/v1/health/live", "health", None, "Liveness: the process answers"),
    Route("GET", "/v1/health/ready", "health", None, "Readiness: every critical dependency answers"),
    Route("GET", "/v1/health/details", "health", "platform:read", "Every component check with measurements"),
    *(
        Route("GET", f"/v1/health/{name}", "health", "platform:read", f"Health of {what}")
        for name, what in _HEALTH_COMPONENT_ROUTES
    ),
    Route("GET", "/v1/health/history", "health", "platform:read", "Health snapshots, newest first"),
    Route("GET", "/v1/openapi.json", "health", None, "The OpenAPI 3 document for the whole API"),
    Route("GET", "/v1/docs", "health", None, "Swagger UI (assets served locally)"),
    # --- cache (issue 3: cache and rate limiting) ---
    Route(
        "GET", "/v1/cache/stats", "cache", "cache:admin", "Hit ratio per data type, memory, keys, top keys"
    ),
    Route("DELETE", "/v1/cache/keys/{key}", "cache", "cache:admin", "Delete one key (namespaced)"),
    Route(
        "DELETE", "/v1/cache/pattern/{pattern}", "cache", "cache:admin", "Delete keys matching a glob pattern"
    ),
    Route("DELETE", "/v1/cache/tags/{tag}", "cache", "cache:admin", "Delete every key carrying a tag"),
    Route("POST", "/v1/cache/warm", "cache", "cache:admin", "Run the registered cache warmers"),
    Route(
        "DELETE",
        "/v1/admin/rate-limits/{subject}",
        "admin",
        ADMIN_SCOPE,
        "Reset a caller's rate limits in every route group",
    ),
    # --- end of cache ---
    # --- flags (issue 4: feature flags) ---
    Route(
        "GET", "/v1/feature-flags", "flags", "flags:read", "Flags by key, filtered by tag, state, staleness"
    ),
    Route("POST", "/v1/feature-flags", "flags", "flags:write", "Create a flag (409 if the key exists)"),
    Route(
        "POST", "/v1/feature-flags/evaluate", "flags", "flags:evaluate", "Every flag's value for the caller"
    ),
    Route("GET", "/v1/feature-flags/{key}", "flags", "flags:read", "One flag"),
    Route(
        "PUT",
        "/v1/feature-flags/{key}",
        "flags",
        "flags:write",
        "Replace a flag (version check: 409 if stale)",
    ),
    Route("POST", "/v1/feature-flags/{key}/toggle", "flags", "flags:write", "Flip or set the kill switch"),
    Route(
        "DELETE", "/v1/feature-flags/{key}", "flags", "flags:write", "Archive a flag (it serves its default)"
    ),
    Route("POST", "/v1/feature-flags/{key}/restore", "flags", "flags:write", "Restore an archived flag"),
    Route(
        "GET",
        "/v1/feature-flags/{key}/analytics",
        "flags",
        "flags:read",
        "Evaluations and unique users per day",
    ),
    Route("GET", "/v1/segments", "flags", "flags:write", "Segments: named, reusable condition sets"),
    Route("POST", "/v1/segments", "flags", "flags:write", "Create a segment"),
    Route("GET", "/v1/segments/{key}", "flags", "flags:write", "One segment"),
    Route("PUT", "/v1/segments/{key}", "flags", "flags:write", "Replace a segment (version check)"),
    Route("DELETE", "/v1/segments/{key}", "flags", "flags:write", "Delete a segment no flag uses"),
    # --- end of flags ---
    # --- config (issue 5: configuration) ---
    Route(
        "GET",
        "/v1/configuration",
        "config",
        "config:read",
        "Every effective setting with its source and version",
    ),
    Route("GET", "/v1/configuration/schema", "config", "config:read", "The JSON Schema of the configuration"),
    Route(
        "GET", "/v1/configuration/{key}", "config", "config:read", "One setting with its source and version"
    ),
    Route(
        "GET",
        "/v1/configuration/{key}/history",
        "config",
        "config:read",
        "A setting's versions, newest first",
    ),
    Route(
        "PUT",
        "/v1/configuration/{key}",
        "config",
        "config:write",
        "Change a runtime setting (If-Match or version)",
    ),
    Route(
        "POST",
        "/v1/configuration/validate",
        "config",
        "config:write",
        "Validate proposed settings, store nothing",
    ),
    Route(
        "POST",
        "/v1/configuration/reload",
        "config",
        "config:write",
        "Every instance reloads at its next check",
    ),
    Route(
        "POST",
        "/v1/configuration/{key}/rollback",
        "config",
        "config:write",
        "Restore a setting's earlier version",
    ),
    # --- end of config ---
    # --- audit (issue 6: audit log) ---
    Route("GET", "/v1/audit-logs", "audit", "audit:read", "Audit entries, newest first, filtered and paged"),
    Route(
        "GET",
        "/v1/audit-logs/verify",
        "audit",
        "audit:read",
        "Verify the hash chain against the latest digest",
    ),
    Route("GET", "/v1/audit-logs/users/{userId}", "audit", "audit:read", "Audit entries of one actor"),
    Route("GET", "/v1/audit-logs/{id}", "audit", "audit:read", "One audit entry"),
    Route("POST", "/v1/audit-logs/export", "audit", "audit:export", "Export entries to S3 as CSV or JSONL"),
    # --- end of audit ---
    # --- jobs (issue 7: jobs, worker, events, e-mail) ---
    Route("GET", "/v1/jobs", "jobs", "jobs:read", "Jobs, newest first, by status, type, priority and date"),
    Route("POST", "/v1/jobs", "jobs", "jobs:write", "Enqueue a job (now, after a delay, or at a time)"),
    Route("GET", "/v1/jobs/schedules", "jobs", "jobs:read", "Recurring schedules and their next runs"),
    Route("POST", "/v1/jobs/schedules/{name}/trigger", "jobs", "jobs:write", "Run a schedule's job now"),
    Route("GET", "/v1/jobs/dead-letters", "jobs", "jobs:read", "Dead-letter queues: depth and a peek"),
    Route("POST", "/v1/jobs/dead-letters/redrive", "jobs", "jobs:write", "Replay dead letters"),
    Route(
        "GET", "/v1/jobs/metrics", "jobs", "jobs:read", "Queue depths, in flight, failures, success rate, p95"
    ),
    Route("GET", "/v1/jobs/{id}", "jobs", "jobs:read", "One job with its history"),
    Route("POST", "/v1/jobs/{id}/cancel", "jobs", "jobs:write", "Cancel a pending or running job"),
    Route("POST", "/v1/jobs/{id}/retry", "jobs", "jobs:write", "Run a failed job again"),
    Route("DELETE", "/v1/jobs/{id}", "jobs", "jobs:write", "Delete a pending job"),
    # --- end of jobs ---
    # --- admin (issue 8: admin, metrics, storage) ---
    Route(
        "GET",
        "/v1/admin/stats",
        "admin",
        "platform:read",
        "The platform in one call: flags, jobs, audit, cache, rate limits, errors, stage",
    ),
    Route("GET", "/v1/admin/errors", "admin", "platform:read", "Error groups: counts, samples, hourly trend"),
    Route("GET", "/v1/metrics", "admin", "metrics:read", "Prometheus metrics (text exposition format 0.0.4)"),
    # --- end of admin ---
)

# API Gateway sends requests that match no route here, so unknown routes and wrong methods get problem+json.
DEFAULT_ROUTE_FUNCTION = "health"

# --- data ---------------------------------------------------------------------------------------

TABLES: tuple[Table, ...] = (
    Table(
        "flags",
        indexes=(Index("by_kind", "kind", "key"),),  # every flag (or segment) by key: a Query, never a Scan
        description="Feature flags, segments and the version stamp",
    ),
    Table("config", description="Runtime settings, versioned"),
    Table(
        "audit",
        ttl_attribute="expires_at",
        indexes=(
            Index("by_id", "id"),
            Index("by_time", "chain", "id"),  # ids are ULIDs, so sorting by id is sorting by time
            Index("by_actor", "actor", "id"),
            Index("by_action", "action", "id"),
            Index("by_entity_type", "entity_type", "id"),
            Index("by_entity", "entity", "id"),  # "<entity_type>#<entity_id>"
        ),
        description="Audit entries (hash chain) and the chain head",
    ),
    Table(
        "jobs",
        ttl_attribute="expires_at",
        indexes=(
            Index("by_status", "status", "id"),  # ids are ULIDs: newest first, dates as id ranges
            Index("by_type", "type", "id"),
            Index("by_time", "kind", "id"),
        ),
        description="Job records and history, idempotency keys, schedule run leases",
    ),
    Table(
        "idempotency",
        partition_key="id",
        sort_key=None,
        ttl_attribute="expiration",
        description="Powertools Idempotency records",
    ),
    Table("health_history", ttl_attribute="expires_at", description="Health snapshots"),
)

BUCKETS: tuple[Bucket, ...] = (
    Bucket("audit", object_lock=True, versioned=True, description="Audit digests, archives and exports"),
    Bucket("storage", versioned=True, description="Application objects (storage client)"),
)

QUEUES: tuple[Queue, ...] = (
    Queue("jobs-high", max_concurrency=10, description="High-priority jobs"),
    Queue("jobs-normal", max_concurrency=5, description="Normal-priority jobs"),
    Queue("jobs-low", max_concurrency=2, description="Low-priority jobs"),
    # One queue per event-bus subscription (underlay.subscriptions): a rule on the bus fills it.
    *(
        Queue(
            s.queue_name,
            max_receive_count=s.max_receive_count,  # here the real retry cap: a failing event then goes to the DLQ
            worker_timeout_s=SUBSCRIBER_TIMEOUT_S,
            max_concurrency=2,
            description=f"Subscription {s.name}: {s.description}",
        )
        for s in SUBSCRIPTIONS
    ),
)

# SNS topics. `email-events`: SES bounce and complaint notifications (a configuration set's event destination).
TOPICS: tuple[str, ...] = ("email-events",)

EVENT_BUS = "underlay"

SCHEDULES: tuple[Schedule, ...] = (
    # --- cache (issue 3: cache and rate limiting) ---
    Schedule("cache-statistics", "0/15 * * * ? *", "UTC", "cache.stats"),
    # --- end of cache ---
    # --- flags (issue 4: feature flags) ---
    Schedule("flags-stale-scan", "0 6 * * ? *", "UTC", "flags.stale_scan"),
    # --- end of flags ---
    # --- config (issue 5: configuration) ---
    # --- end of config ---
    # --- audit (issue 6: audit log) ---
    Schedule("audit-digest", "0 * * * ? *", "UTC", "audit.digest"),
    # --- end of audit ---
    # --- jobs (issue 7: jobs, worker, events, e-mail) ---
    Schedule("health-snapshot", "0/5 * * * ? *", "UTC", "health.snapshot"),
    # --- end of jobs ---
    # --- admin (issue 8: admin, metrics, storage) ---
    # --- end of admin ---
)


# --- look-ups -----------------------------------------------------------------------------------


def function(name: str) -> Function:
    for fn in FUNCTIONS:
        if fn.name == name:
            return fn
    raise KeyError(f"undeclared function {name!r}")


def routes_for(function_name: str) -> tuple[Route, ...]:
    return tuple(r for r in ROUTES if r.function == function_name)


@lru_cache(maxsize=1)
def _routes_by_key() -> dict[str, Route]:
    return {r.key: r for r in ROUTES}


def route(route_key: str) -> Route | None:
    """The declared route for an API Gateway route key (`GET /v1/health`), if any."""
    return _routes_by_key().get(route_key)


def _path_regex(path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{[A-Za-z_][A-Za-z0-9_]*\\\}", "([^/]+)", re.escape(path))
    return re.compile(f"^{pattern}$")


@lru_cache(maxsize=1)
def _compiled() -> tuple[tuple[re.Pattern[str], Route], ...]:
    # Literal routes before templated ones, as API Gateway matches the most specific route first.
    ordered = sorted(ROUTES, key=lambda r: r.path.count("{"))
    return tuple((_path_regex(r.path), r) for r in ordered)


class Match(NamedTuple):
    route: Route | None  # the route for this method and path
    allowed: tuple[str, ...]  # methods declared for this path (non-empty with route=None means 405)
    path_parameters: dict[str, str]


def match(method: str, path: str) -> Match:
    """Match a request the way API Gateway would: the route, or the methods the path allows."""
    allowed: list[str] = []
    found: Route | None = None
    params: dict[str, str] = {}
    for regex, candidate in _compiled():
        m = regex.match(path)
        if not m:
            continue
        if candidate.method == method.upper() and found is None:
            found = candidate
            names = re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", candidate.path)
            params = dict(zip(names, m.groups(), strict=True))
        allowed.append(candidate.method)
    return Match(found, tuple(sorted(set(allowed))), params)


def has_scope(granted: frozenset[str] | set[str], required: str | None) -> bool:
    """`platform:admin` implies every scope."""
    return required is None or required in granted or ADMIN_SCOPE in granted


def env_name(kind: str, name: str) -> str:
    """The environment variable that carries a resource's physical name/URL, read by settings."""
    return f"UNDERLAY_{kind.upper()}S__{name.upper().replace('-', '_')}"
