"""What the config API does: read the effective settings, change runtime values, validate, reload, roll back.

Every change is validated against the whole schema (the value in place, with the stage and env layers around it)
before it is stored, is conditional on the version the caller read (a stale one gets 409), writes a history entry
and an audit entry with before and after, emits ConfigurationUpdated, and moves the stamp so every warm
instance picks it up at its next check. Secrets are never returned: they show as `{"secret": true, "set": ...}`.
"""

from __future__ import annotations

from typing import Any

from underlay import events, pagination
from underlay.config import keys, runtime, store
from underlay.errors import (
    ConfigInvalidError,
    FieldError,
    ForbiddenError,
    NotFoundError,
    ValidationFailedError,
    field_errors_from_pydantic,
)
from underlay.settings import get_settings

_HISTORY_CURSOR = "config-history"


def _table() -> str:
    table = get_settings().resource("table", "config")
    if not table:
        raise ConfigInvalidError("No config table is configured for this function (tables.config).")
    return table


def _key(name: str) -> keys.Key:
    key = keys.lookup(name)
    if key is None:
        raise NotFoundError(
            f"There is no setting {name!r}; GET /v1/configuration lists them.", code="UNKNOWN_KEY"
        )
    return key


def _writable(name: str) -> keys.Key:
    key = _key(name)
    if not key.runtime:
        code = "SECRET_KEY" if key.secret else "READ_ONLY_KEY"
        raise ForbiddenError(f"{name} cannot be changed at runtime: {key.why_read_only}.", code=code)
    return key


def _effective_value(loaded: runtime.Loaded, key: keys.Key) -> Any:
    if key.secret:  # set locally (SecretStr) or by reference (the ARN field CDK fills in)
        dumped = loaded.settings.model_dump()
        by_reference = key.reference is not None and keys.value_at(dumped, key.reference)[1]
        return {"secret": True, "set": bool(keys.value_at(dumped, key.path)[1] or by_reference)}
    return keys.value_at(loaded.settings.model_dump(mode="json"), key.path)[1]


def view(loaded: runtime.Loaded, key: keys.Key) -> dict[str, Any]:
    source = loaded.sources[key.name]
    out: dict[str, Any] = {
        "key": key.name,
        "value": _effective_value(loaded, key),
        "source": source,
        "version": loaded.snapshot.versions.get(key.name, 0),  # the runtime value's version; 0 = never set
        "writable": key.runtime,
        "secret": key.secret,
    }
    if key.description:
        out["description"] = key.description
    if key.name in loaded.snapshot.updated:
        out["updated_at"] = loaded.snapshot.updated[key.name]["at"]
        out["updated_by"] = loaded.snapshot.updated[key.name]["by"]
    if key.name in loaded.snapshot.values and source == "env":
        out["shadowed_by"] = "env"  # the runtime value is stored but an environment variable wins
    return out


def _fresh() -> runtime.Loaded:
    """This instance's configuration, reloaded first if the stamp moved (reads see every acknowledged write)."""
    runtime.refresh_if_due(force=True)
    return runtime.current()


def list_settings() -> dict[str, Any]:
    loaded = _fresh()
    errors = runtime.invalid_errors()  # stored values that break the configuration, left out until fixed
    return {
        "stage": loaded.settings.stage,
        "version": loaded.version,
        "valid": not errors,
        "errors": errors,
        "settings": [view(loaded, key) for key in keys.catalogue().values()],
    }


def get(name: str) -> dict[str, Any]:
    key = _key(name)
    return {**view(_fresh(), key), "config_version": runtime.current().version}


def _candidate(loaded: runtime.Loaded, values: dict[str, Any]) -> tuple[Any, list[FieldError]]:
    """Validate runtime `values` with the stage and env layers around them: (settings, errors)."""
    from pydantic import ValidationError

    try:
        settings = runtime.validate(runtime.compose(loaded.stage, values, loaded.env))
    except ValidationError as error:
        return None, field_errors_from_pydantic(error.errors())
    return settings, []


def put(name: str, value: Any, *, expected_version: int | None, actor: str) -> dict[str, Any]:
    key = _writable(name)
    return _change(key, value, expected_version=expected_version, actor=actor, action="update")


def _canonical(loaded: runtime.Loaded, key: keys.Key, value: Any) -> Any:
    """The value as stored: validated and normalised by its own section with the stage layer under it, never with
    the env layer, whose emergency overrides must not be written into the table."""
    from pydantic import ValidationError
    from underlay.settings import Settings

    section, field = key.path
    model = Settings.model_fields[section].annotation
    stage = loaded.stage.get(section)
    document = {
        **(stage if isinstance(stage, dict) else {}),
        field: value,
    }  # the value replaces the field whole
    try:
        return model.model_validate(document).model_dump(mode="json")[field]  # type: ignore[union-attr]
    except ValidationError:  # valid only with the env layer around it: store it as sent
        return value


def _change(
    key: keys.Key,
    value: Any,
    *,
    expected_version: int | None,
    actor: str,
    action: store.Action,
    from_version: int | None = None,
) -> dict[str, Any]:
    """Store `value` (or `store.REMOVED`) as the key's runtime value: validated, version-checked, audited."""
    from underlay import audit
    from underlay.errors import ConflictError

    table = _table()
    loaded = runtime.current()
    snapshot = store.load(table)
    current_version = snapshot.versions.get(key.name, 0)
    if expected_version is not None and expected_version != current_version:
        raise ConflictError(
            f"{key.name} is at version {current_version}, not {expected_version}; read it again and retry.",
            code="VERSION_CONFLICT",
        )
    values = {k: v for k, v in snapshot.values.items() if k != key.name}
    if value is not store.REMOVED:
        values[key.name] = value
    settings, errors = _candidate(loaded, values)
    if errors:
        raise ValidationFailedError(f"{key.name} would make the configuration invalid.", errors=errors)
    stored = value if value is store.REMOVED else _canonical(loaded, key, value)
    before_settings, _ = _candidate(
        loaded, snapshot.values
    )  # from the fresh snapshot, not this instance's copy
    version = store.write(
        table,
        key.name,
        stored,
        current_version=current_version,
        previous=snapshot.values.get(key.name),
        actor=actor,
        action=action,
        from_version=from_version,
    )

    def state(of: Any, runtime_value: Any, at: int) -> dict[str, Any]:
        effective = keys.value_at(of.model_dump(mode="json"), key.path)[1] if of is not None else None
        return {"value": effective, "runtime_value": runtime_value, "version": at}

    audit.record(
        f"config.{action}",
        "config",
        key.name,
        before=state(before_settings, snapshot.values.get(key.name), current_version),
        after=state(settings, None if stored is store.REMOVED else stored, version),
        actor=actor,
    )
    events.publish(
        "ConfigurationUpdated", {"key": key.name, "version": version, "action": action, "actor": actor}
    )
    return get(key.name)


def validate_document(values: dict[str, Any]) -> dict[str, Any]:
    """Check proposed runtime values (`{"cache.default_ttl_seconds": 60, ...}`) without storing anything."""
    problems: list[FieldError] = []
    for name in values:
        key = keys.lookup(name)
        if key is None:
            problems.append(FieldError(name, "there is no such setting"))
        elif not key.runtime:
            problems.append(FieldError(name, f"cannot be changed at runtime: {key.why_read_only}"))
    loaded = _fresh()
    if not problems:
        _, problems = _candidate(loaded, {**loaded.snapshot.values, **values})
    errors = [{"field": p.field, "message": p.message} for p in problems]
    events.publish(
        "ConfigurationValidated",
        {"valid": not errors, "version": loaded.version, "keys": sorted(values), "errors": errors},
    )
    return {"valid": not errors, "errors": errors, "version": loaded.version}


def reload(*, actor: str) -> dict[str, Any]:
    """Move the stamp: every instance reloads at its next check (this one now)."""
    version = store.bump_stamp(_table(), actor=actor)
    runtime.refresh_if_due(force=True)
    return {"version": version, "refresh_seconds": get_settings().config.refresh_seconds}


def history(name: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
    key = _key(name)
    scope = f"{_HISTORY_CURSOR}:{key.name}"
    before = int(pagination.decode(cursor, scope)["before"]) if cursor else None
    page = store.history(
        _table(), key.name, limit=min(limit, get_settings().config.history_limit), before=before
    )
    next_cursor = (
        pagination.encode({"before": page.last_version}, scope) if page.last_version is not None else None
    )
    return {"key": key.name, "entries": page.entries, "next_cursor": next_cursor}


def rollback(name: str, version: int, *, expected_version: int | None, actor: str) -> dict[str, Any]:
    """Store the value `name` had at `version` as a new version (validated again: the schema may have moved).
    Version 0, or a version that removed the value, takes the key back to its stage or default value."""
    key = _writable(name)
    value: Any = store.REMOVED
    if version:
        entry = store.history_entry(_table(), key.name, version)
        value = store.REMOVED if entry.get("removed") else entry["value"]
    return _change(
        key, value, expected_version=expected_version, actor=actor, action="rollback", from_version=version
    )


def schema() -> dict[str, Any]:
    """The JSON Schema of the whole configuration, and which keys the API may change."""
    from underlay.settings import Settings

    document = Settings.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["x-runtime-keys"] = [k.name for k in keys.catalogue().values() if k.runtime]
    document["x-secret-keys"] = [k.name for k in keys.catalogue().values() if k.secret]
    return document
