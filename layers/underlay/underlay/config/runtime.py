"""The effective configuration of this process: four layers, validated once, swapped atomically on change.

Precedence, lowest first (the source of each key is reported by the config API and logged at cold start):
1. `default`: the pydantic models in `underlay.settings`.
2. `stage`: the stage config's `settings` document (`infra/stages/<stage>.json`), validated at synth and
   deployed as the `UNDERLAY_STAGE_SETTINGS` variable.
3. `runtime`: values in the config table (`underlay.config.store`), each one validated when written.
4. `env`: `UNDERLAY_*` variables, for local work and emergencies.

A runtime value replaces the whole key (`ratelimit.tiers` is one value); the stage and env layers merge into it
field by field. A cold start loads everything with one Query. After that, `refresh_if_due()` (called at every
request and batch boundary) reads the stamp at most every `config.refresh_seconds`; when it moved, the new
layers are loaded and validated and swapped in, or, when invalid, refused with an error log and the
`ConfigReloadRejected` metric while the old settings stay in force.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from underlay.config import keys, store

if TYPE_CHECKING:
    from pydantic import ValidationError
    from underlay.http import RequestInfo
    from underlay.settings import Settings

Source = Literal["default", "stage", "runtime", "env"]
_FAILURE_RETRY_SECONDS = 5.0


class Loaded(NamedTuple):
    settings: Settings
    sources: dict[str, Source]
    snapshot: store.Snapshot  # the runtime layer and its stamp (the configuration version)
    table: str | None  # the config table, when this function may read it
    stage: dict[str, Any]
    env: dict[str, Any]

    @property
    def version(self) -> int:
        return self.snapshot.stamp


class Failure(NamedTuple):
    error: ValidationError
    at: float
    # The stage and env layers without the stored runtime values, when those alone are valid: what the config
    # API serves in `repair_mode()` so an operator can still read and fix the values that broke the configuration.
    repair: Loaded | None


_lock = threading.RLock()
_state: Loaded | None = None
_failure: Failure | None = None
_repairing: ContextVar[bool] = ContextVar("underlay_config_repair", default=False)
_checked_at = 0.0
_rejected: tuple[int, list[dict[str, str]]] | None = None  # the stamp a reload refused, and why
_function_level: str | None = None  # the level the function's logger was last given
_library_levels: dict[str, str] = {}  # Python loggers this module set, and to what


# --- layers -----------------------------------------------------------------------------------------


def stage_layer(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    from underlay.settings import STAGE_SETTINGS_ENV

    raw = (os.environ if environ is None else environ).get(STAGE_SETTINGS_ENV, "")
    if not raw:
        return {}
    value = json.loads(raw)  # written by CDK from a validated document; a broken one should fail loudly
    return value if isinstance(value, dict) else {}


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, dicts merged key by key, into a new document that shares nothing with either (the
    layers are kept for every later reload, so composing must never change them)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def compose(stage: dict[str, Any], runtime: Mapping[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """The document `Settings` validates: stage, then each runtime key replaced wholesale, then env."""
    document = merge({}, stage)
    for name, value in runtime.items():
        key = keys.lookup(name)
        if key is not None:
            keys.set_at(document, key.path, value)
    return merge(document, env)


def sources_of(stage: dict[str, Any], runtime: Mapping[str, Any], env: dict[str, Any]) -> dict[str, Source]:
    found: dict[str, Source] = {}
    for name, key in keys.catalogue().items():
        if keys.value_at(env, key.path)[0]:
            found[name] = "env"
        elif name in runtime:
            found[name] = "runtime"
        elif keys.value_at(stage, key.path)[0]:
            found[name] = "stage"
        else:
            found[name] = "default"
    return found


def validate(document: dict[str, Any]) -> Settings:
    """Raises pydantic `ValidationError` (title "Settings") naming every bad field."""
    from underlay.settings import Settings

    return Settings.model_validate(document)


def _table(env: dict[str, Any]) -> str | None:
    tables = env.get("tables")
    if not isinstance(tables, dict):
        return None
    name = tables.get("config")
    return str(name) if name else None


def build(
    snapshot: store.Snapshot, *, stage: dict[str, Any], env: dict[str, Any], table: str | None
) -> Loaded:
    if (
        snapshot.corrupt
    ):  # as invalid as a bad value: CONFIG_INVALID naming the keys, and repairable through the API
        from pydantic import ValidationError

        unreadable = {"error": "the stored item is unreadable"}
        raise ValidationError.from_exception_data(
            "Settings",
            [
                {"type": "value_error", "loc": tuple(k.split(".")), "input": None, "ctx": unreadable}
                for k in snapshot.corrupt
            ],
        )
    settings = validate(compose(stage, snapshot.values, env))
    return Loaded(settings, sources_of(stage, snapshot.values, env), snapshot, table, stage, env)


# --- this process's configuration ---------------------------------------------------------------------


def current() -> Loaded:
    """The loaded configuration (loading it on first use). Raises `ValidationError` while it is invalid, except
    in `repair_mode()`, where stored runtime values that broke it are left out (when that helps)."""
    from pydantic import ValidationError

    state = _state
    if state is not None:
        return state
    with _lock:
        if _state is not None:
            return _state
        if _failure is None or time.monotonic() - _failure.at >= _FAILURE_RETRY_SECONDS:
            try:
                return _cold_load()
            except ValidationError:
                if not _repairing.get():
                    raise
        assert _failure is not None
        if _repairing.get() and _failure.repair is not None:
            return _failure.repair
        raise _failure.error


def invalid_errors() -> list[dict[str, str]]:
    """The fields that make the stored configuration invalid (empty when it is valid): a failed cold load, or the
    newest version a reload refused (warm instances keep the old settings; new ones would answer 503)."""
    if _state is None and _failure is not None:
        return _field_errors(_failure.error)
    return _rejected[1] if _rejected is not None else []


@contextmanager
def repair_mode() -> Iterator[None]:
    """Serve the default, stage and env layers while stored runtime values make the configuration invalid, so the
    config API can show them and take a fix or a rollback. Only the config function runs its requests in it."""
    token = _repairing.set(True)
    try:
        yield
    finally:
        _repairing.reset(token)


def effective() -> Settings:
    return current().settings


def _cold_load() -> Loaded:
    global _state, _failure, _checked_at
    from pydantic import ValidationError
    from underlay.settings import env_source

    stage, env = stage_layer(), env_source()
    table = _table(env)
    snapshot, load_error = store.EMPTY, None
    if table:
        try:
            snapshot = store.load(table)
        except Exception as error:  # unreachable: serve defaults, stage and env; retry at the next boundary
            load_error, snapshot = error, store.UNKNOWN
    try:
        loaded = build(snapshot, stage=stage, env=env, table=table)
    except ValidationError as error:
        _failure = Failure(
            error, time.monotonic(), _without_runtime(snapshot, stage=stage, env=env, table=table)
        )
        _report_invalid(error, snapshot.stamp, when="load")
        raise
    _state, _failure, _checked_at = loaded, None, time.monotonic()
    if load_error is not None:
        _checked_at = 0.0  # try the table again at the next boundary
        _snapshot_unavailable(load_error)
    _apply_logger_levels(loaded.settings)
    _report_loaded(loaded)
    return loaded


def refresh_if_due(*, force: bool = False) -> bool:
    """Check the version stamp (at most every `config.refresh_seconds`; `force`: now) and swap in a changed
    configuration. An unchanged stamp, or one whose configuration was already refused, costs one GetItem.

    Returns True when new settings were swapped in. Never raises for a store or validation problem: the
    settings in force stay in force.
    """
    global _checked_at
    state = current()
    if state.table is None:
        return False
    now = time.monotonic()
    if not force and now - _checked_at < state.settings.config.refresh_seconds:
        return False
    _checked_at = now
    try:
        stamp = store.read_stamp(state.table)
    except Exception as error:
        _snapshot_unavailable(error)
        return False
    if stamp == state.version or (_rejected is not None and stamp == _rejected[0]):
        return False
    return _reload(state)


def _reload(old: Loaded) -> bool:
    global _state, _failure, _rejected
    from pydantic import ValidationError

    assert old.table is not None
    try:
        snapshot = store.load(old.table)
    except Exception as error:
        _snapshot_unavailable(error)
        return False
    try:
        new = build(snapshot, stage=old.stage, env=old.env, table=old.table)
    except ValidationError as error:
        _rejected = (snapshot.stamp, _field_errors(error))
        _report_invalid(error, snapshot.stamp, when="reload")
        return False
    with _lock:
        _state, _failure, _rejected = new, None, None
    changed = changed_keys(old.settings, new.settings)
    _apply_logger_levels(new.settings)
    _rebuild_changed(changed)
    _report_reloaded(old, new, changed)
    return True


def _without_runtime(
    snapshot: store.Snapshot, *, stage: dict[str, Any], env: dict[str, Any], table: str | None
) -> Loaded | None:
    from pydantic import ValidationError

    if not snapshot.values and not snapshot.corrupt:
        return None  # the stored values are not what broke it
    try:
        settings = validate(compose(stage, {}, env))
    except ValidationError:
        return None  # the stage or env layer is invalid too: nothing to repair through the API
    return Loaded(settings, sources_of(stage, {}, env), snapshot, table, stage, env)


def reset() -> None:
    global _state, _failure, _checked_at, _rejected, _function_level
    with _lock:
        _state = _failure = _rejected = _function_level = None
        _checked_at = 0.0
        _library_levels.clear()


def changed_keys(old: Settings, new: Settings) -> list[str]:
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [
        name
        for name, key in keys.catalogue().items()
        if keys.value_at(before, key.path) != keys.value_at(after, key.path)
    ]


def batch_boundary(function: str) -> None:
    """What a non-HTTP entry point (SQS batch, stream batch, SNS notification) calls before its work: pick up a
    changed configuration and apply the function's log level. Never raises for a store problem."""
    refresh_if_due()
    apply_function_log_level(function)


# --- log levels per component -------------------------------------------------------------------------


def apply_function_log_level(function: str) -> None:
    """Set this function's logger to its level from `observability.log_levels` (or `log_level`)."""
    global _function_level
    settings = effective()
    level = settings.observability.log_levels.get(function, settings.observability.log_level)
    if _function_level == level:
        return
    from underlay.observability import get_logger

    get_logger().setLevel(level)
    _function_level = level


def _apply_logger_levels(settings: Settings) -> None:
    """Python loggers named in `observability.log_levels` ("botocore", "urllib3", ...); a name dropped from it goes
    back to inheriting its level. Function names are applied at each request or batch (`apply_function_log_level`)."""
    global _function_level
    from underlay import declaration

    functions = {f.name for f in declaration.FUNCTIONS}
    _function_level = None  # re-applied at the next request or batch
    wanted = {n: lv for n, lv in settings.observability.log_levels.items() if n not in functions}
    for name in [n for n in _library_levels if n not in wanted]:
        logging.getLogger(name).setLevel(logging.NOTSET)
        del _library_levels[name]
    for name, level in wanted.items():
        if _library_levels.get(name) != level:
            logging.getLogger(name).setLevel(level)
            _library_levels[name] = level


# --- process objects built from settings ------------------------------------------------------------------

# What a runtime change must rebuild, by key prefix: "module:function", called only when the module is loaded (one
# that is not reads the new settings when it first builds them). Everything else reads the settings per use.
REBUILD_ON_CHANGE: dict[str, str] = {
    "breakers.": "underlay.breaker:reset_breakers",
    "observability.sentry_": "underlay.sentry:reset_sentry",
    "observability.trace_sample_rate": "underlay.sentry:reset_sentry",
    "audit.max_write_attempts": "underlay.audit:reset_audit",
}


def _rebuild_changed(changed: list[str]) -> None:
    import importlib
    import sys

    targets = {
        target for prefix, target in REBUILD_ON_CHANGE.items() if any(k.startswith(prefix) for k in changed)
    }
    for target in sorted(targets):
        module, _, function = target.partition(":")
        if module in sys.modules:
            getattr(importlib.import_module(module), function)()


# --- reporting: logs, metrics, events (after the state is set, so they can read settings) ----------------


def _report_loaded(loaded: Loaded) -> None:
    from underlay import events
    from underlay.observability import get_logger

    overridden = {name: source for name, source in loaded.sources.items() if source != "default"}
    get_logger().info(
        "configuration loaded",
        extra={
            "stage": loaded.settings.stage,
            "config_version": loaded.version,
            "sources": overridden,  # key -> source; values are not logged, so secrets cannot leak here
            "runtime_keys": sorted(loaded.snapshot.values),
        },
    )
    events.publish(
        "ConfigurationLoaded",
        {
            "stage": loaded.settings.stage,
            "version": loaded.version,
            "runtime_keys": sorted(loaded.snapshot.values),
        },
    )


def _report_reloaded(old: Loaded, new: Loaded, changed: list[str]) -> None:
    from underlay import events
    from underlay.observability import get_logger

    get_logger().info(
        "configuration reloaded",
        extra={"from_version": old.version, "config_version": new.version, "changed": changed},
    )
    events.publish(
        "ConfigurationReloaded", {"from_version": old.version, "version": new.version, "changed": changed}
    )


def _report_invalid(error: ValidationError, stamp: int, *, when: str) -> None:
    from aws_lambda_powertools.metrics import MetricUnit
    from underlay import events
    from underlay.observability import get_logger, get_metrics

    errors = _field_errors(error)
    if when == "reload":
        get_logger().error(
            "configuration reload refused: the new settings are invalid; the current ones stay in force",
            extra={"config_version": stamp, "errors": errors},
        )
        get_metrics().add_metric(name="ConfigReloadRejected", unit=MetricUnit.Count, value=1)
    else:
        get_logger().error("configuration is invalid", extra={"config_version": stamp, "errors": errors})
        get_metrics().add_metric(name="ConfigInvalid", unit=MetricUnit.Count, value=1)
    events.publish(
        "ConfigurationValidated", {"valid": False, "version": stamp, "when": when, "errors": errors}
    )


def _field_errors(error: ValidationError) -> list[dict[str, str]]:
    from underlay.errors import field_errors_from_pydantic

    return [{"field": e.field, "message": e.message} for e in field_errors_from_pydantic(error.errors())]


def _snapshot_unavailable(error: BaseException) -> None:
    from aws_lambda_powertools.metrics import MetricUnit
    from underlay.aws import error_code
    from underlay.observability import get_logger, get_metrics

    get_logger().warning(
        "config table unavailable; the settings in force stay in force",
        extra={"error": error_code(error) or type(error).__name__},
    )
    get_metrics().add_metric(name="ConfigStoreUnavailable", unit=MetricUnit.Count, value=1)


# --- the request hook (`underlay.http.REQUEST_HOOKS`) ---------------------------------------------------


class _ConfigHook:
    """Checks the version stamp at each request (at most every `config.refresh_seconds`) and applies the
    function's log level."""

    def before(self, request: RequestInfo) -> None:
        refresh_if_due()
        if request.route is not None:
            apply_function_log_level(request.route.function)

    def after(self, request: RequestInfo, status: int, headers: dict[str, str]) -> None:
        return None


hook = _ConfigHook()
