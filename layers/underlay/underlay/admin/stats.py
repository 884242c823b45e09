"""`GET /v1/admin/stats`: the platform in one call, as a registry of sections.

Each section is a provider (a function of no arguments returning JSON-able data) registered under a name:

    from underlay.admin import stats

    @stats.section("config")
    def config_version() -> dict[str, Any]:
        return {"version": ...}

The providers run in parallel (threads, with the request's context), under one deadline
(`admin.stats_timeout_seconds`, at most 8 s, and never past the invocation's remaining time less a second: the
admin function's timeout is 10 s). A section that fails or runs late answers `{"error": "..."}` for itself only:
the others, and the call, still succeed. No provider scans a table: each reads counters in Redis or runs Queries
on an index (COUNT where it only needs a number).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from datetime import UTC, datetime, timedelta
from typing import Any

Provider = Callable[[], Any]
SECTIONS: dict[str, Provider] = {}
COUNT_MAX_PAGES = 20  # a COUNT Query reads up to 1 MB a page; past this the figure says it is a lower bound
JOB_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
RESPONSE_MARGIN_SECONDS = (
    1.0  # of the invocation's time, kept for the answer (and its hooks) after the sections
)
MIN_DEADLINE_SECONDS = 0.1

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def section(name: str) -> Callable[[Provider], Provider]:
    """Register a provider under `name` (a later registration of the same name replaces it)."""

    def register(provider: Provider) -> Provider:
        SECTIONS[name] = provider
        return provider

    return register


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="admin-stats")
        return _pool


def describe(error: BaseException) -> str:
    """What a failed section says: an UnderlayError's detail, an AWS error code, else the exception type."""
    from underlay.errors import UnderlayError

    if isinstance(error, UnderlayError):
        return error.detail
    from underlay.aws import error_code

    code = error_code(error)
    return f"AWS error {code}" if code else type(error).__name__


def collect(
    sections: dict[str, Provider] | None = None,
    *,
    timeout: float | None = None,
    remaining_seconds: float | None = None,
) -> dict[str, Any]:
    """Every section's data, or its `{"error": ...}`; never raises.

    The deadline is `timeout` (default `admin.stats_timeout_seconds`), cut to the invocation's
    `remaining_seconds` less `RESPONSE_MARGIN_SECONDS`: late sections say so, rather than Lambda timing out."""
    from underlay.admin.settings import admin_settings
    from underlay.observability import get_logger

    chosen = SECTIONS if sections is None else sections
    deadline = admin_settings().stats_timeout_seconds if timeout is None else timeout
    if remaining_seconds is not None:
        deadline = max(MIN_DEADLINE_SECONDS, min(deadline, remaining_seconds - RESPONSE_MARGIN_SECONDS))
    futures = {
        name: _executor().submit(contextvars.copy_context().run, provider)
        for name, provider in chosen.items()
    }
    wait_all(futures.values(), timeout=deadline)
    result: dict[str, Any] = {}
    for name, future in futures.items():
        if not future.done():
            future.cancel()
            result[name] = {"error": f"no answer within {deadline:g} s"}
            continue
        error = future.exception()
        if error is None:
            result[name] = future.result()
        else:
            get_logger().warning(
                "stats section failed", extra={"section": name, "error": type(error).__name__}, exc_info=error
            )
            result[name] = {"error": describe(error)}
    return result


# --- helpers ----------------------------------------------------------------------------------------


def _ddb() -> Any:
    from underlay.aws import client

    return client("dynamodb")


def _table(name: str) -> str:
    from underlay.errors import ConfigInvalidError
    from underlay.settings import get_settings

    found = get_settings().resource("table", name)
    if not found:
        raise ConfigInvalidError(f"The {name} table is not configured for this function.")
    return found


def _since_id(hours: int = 24) -> str:
    """The smallest ULID of the moment `hours` ago: ids are ULIDs, so `id >= this` is "created since"."""
    from underlay.ids import ulid_bound

    since = datetime.now(UTC) - timedelta(hours=hours)
    return ulid_bound(int(since.timestamp() * 1000), upper=False)


def count(request: dict[str, Any]) -> tuple[int, bool]:
    """A `Select=COUNT` Query over every page (at most `COUNT_MAX_PAGES`): (count, whether it stopped early)."""
    request = {**request, "Select": "COUNT"}
    total = 0
    for _ in range(COUNT_MAX_PAGES):
        page = _ddb().query(**request)
        total += int(page["Count"])
        if "LastEvaluatedKey" not in page:
            return total, False
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return total, True


def _recent(table: str, index: str, attribute: str, value: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": "#p = :p AND #id >= :lo",
        "ExpressionAttributeNames": {"#p": attribute, "#id": "id"},
        "ExpressionAttributeValues": {":p": {"S": value}, ":lo": {"S": _since_id()}},
    }


# --- the sections -----------------------------------------------------------------------------------


@section("stage")
def stage() -> dict[str, Any]:
    from underlay.settings import get_settings

    settings = get_settings()
    return {
        "stage": settings.stage,
        "service": settings.service,
        "version": settings.version,
        "release_id": settings.release_id,
    }


@section("config")
def config() -> dict[str, Any]:
    """The configuration version in force here and which keys carry runtime values (`underlay.config`)."""
    from underlay.config import runtime

    loaded = runtime.current()
    return {
        "version": loaded.version,
        "runtime_keys": sorted(loaded.snapshot.values),
        "refresh_seconds": loaded.settings.config.refresh_seconds,
    }


@section("flags")
def flags() -> dict[str, Any]:
    """Flags by state (enabled, disabled, archived) and how many are marked stale: the `by_kind` index."""
    from underlay.flags import store

    by_state = {"enabled": 0, "disabled": 0, "archived": 0}
    stale = 0
    request: dict[str, Any] = {
        "TableName": store.table(),
        "IndexName": "by_kind",
        "KeyConditionExpression": "kind = :k",
        "ExpressionAttributeValues": {":k": {"S": "flag"}},
        "ExpressionAttributeNames": {"#s": "state", "#st": "stale"},
        "ProjectionExpression": "#s, #st",
    }
    while True:
        page = _ddb().query(**request)
        for item in page.get("Items", []):
            state = item.get("state", {}).get("S", "enabled")
            by_state[state] = by_state.get(state, 0) + 1
            stale += bool(item.get("stale", {}).get("BOOL"))
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return {"total": sum(by_state.values()), "by_state": by_state, "stale": stale}


@section("jobs")
def jobs() -> dict[str, Any]:
    """Jobs created in the last 24 h by status (COUNT Queries on `by_status`), and the queues (`jobs.query`)."""
    from underlay.jobs import query, store

    table = store.table()
    by_status: dict[str, int] = {}
    truncated = False
    for status in JOB_STATUSES:
        n, more = count(_recent(table, "by_status", "status", status))
        by_status[status] = n
        truncated |= more
    figures = query.metrics()
    result: dict[str, Any] = {
        "last_24h": by_status,
        "success_rate_24h": figures["last_24h"]["success_rate"],
        "p95_duration_ms": figures["last_24h"]["p95_duration_ms"],
        "queues": figures["queues"],
    }
    if truncated:
        result["lower_bound"] = True
    return result


@section("audit")
def audit() -> dict[str, Any]:
    """Audit entries written in the last 24 h: a COUNT Query on the `by_time` index."""
    from underlay.audit.chain import CHAIN

    n, more = count(_recent(_table("audit"), "by_time", "chain", CHAIN))
    return {"entries_24h": n, **({"lower_bound": True} if more else {})}


@section("cache")
def cache() -> dict[str, Any]:
    """Hit ratio per data type (all instances) and memory, from the cache's own statistics."""
    from underlay.cache import get_cache

    figures = get_cache().statistics(top=0)
    return {
        "hit_ratio": figures["hit_ratio"],
        "hits": figures["hits"],
        "misses": figures["misses"],
        "by_type": figures["by_type"],
        "memory": figures["memory"],
        "keys": figures["keys"]["total"],
        "circuit": figures["circuit"],
    }


@section("rate_limits")
def rate_limits() -> dict[str, Any]:
    from underlay.admin.metrics import violations_24h

    return {"violations_24h": violations_24h()}


@section("errors")
def errors() -> dict[str, Any]:
    """Errors in the last 24 h and the busiest groups (see `GET /v1/admin/errors` for all of them)."""
    from underlay.admin import errors as groups
    from underlay.admin.settings import admin_settings

    return groups.summary(admin_settings().stats_top_errors)
