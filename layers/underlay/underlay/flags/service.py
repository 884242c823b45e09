"""Flag and segment changes as the API makes them: each write is audited with its before and after state and
announced on the event bus; and the daily stale scan (`flags.stale_scan`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from underlay import audit, events
from underlay.flags import store
from underlay.flags.model import Flag, FlagSpec, Segment
from underlay.job_types import JobContext, job_type

TARGETING_FIELDS = ("rules", "targets", "rollout", "prerequisites", "variants", "default", "off")


def view(flag: Flag) -> dict[str, Any]:
    return {**flag.model_dump(mode="json", exclude={"salt"}), "state": store.state_of(flag)}


def _changed(before: Flag, after: Flag) -> None:
    audit.record("flags.update", "flag", after.key, before=view(before), after=view(after))
    if any(getattr(before, f) != getattr(after, f) for f in TARGETING_FIELDS):
        events.publish("FeatureFlagTargetingUpdated", {"key": after.key, "version": after.version})


def create(spec: FlagSpec, actor: str) -> Flag:
    flag = store.create(spec, actor)
    audit.record("flags.create", "flag", flag.key, after=view(flag))
    events.publish(
        "FeatureFlagCreated", {"key": flag.key, "type": flag.type, "enabled": flag.enabled, "version": 1}
    )
    return flag


def update(key: str, spec: FlagSpec, version: int, actor: str) -> Flag:
    from underlay.errors import FieldError, ValidationFailedError

    if spec.key != key:
        raise ValidationFailedError("The key cannot change.", errors=[FieldError("key", f"must be {key!r}")])
    current = store.get(key)
    updated = store.replace(current, spec.model_dump(), version, actor, validate_refs=True)
    _changed(current, updated)
    if current.enabled != updated.enabled:
        events.publish(
            "FeatureFlagToggled", {"key": key, "enabled": updated.enabled, "version": updated.version}
        )
    return updated


def toggle(key: str, enabled: bool | None, version: int | None, actor: str) -> Flag:
    """Flip (or set) the kill switch. Without a version, the current one is used: a toggle is idempotent enough."""
    current = store.get(key)
    target = (not current.enabled) if enabled is None else enabled
    updated = store.replace(current, {"enabled": target}, version or current.version, actor)
    audit.record("flags.toggle", "flag", key, before={"enabled": current.enabled}, after={"enabled": target})
    events.publish("FeatureFlagToggled", {"key": key, "enabled": target, "version": updated.version})
    return updated


def archive(key: str, actor: str) -> Flag:
    current = store.get(key)
    updated = store.replace(current, {"archived": True}, current.version, actor)
    audit.record(
        "flags.archive", "flag", key, before={"archived": current.archived}, after={"archived": True}
    )
    events.publish("FeatureFlagArchived", {"key": key, "version": updated.version})
    return updated


def restore(key: str, actor: str) -> Flag:
    current = store.get(key)
    updated = store.replace(current, {"archived": False}, current.version, actor)
    audit.record(
        "flags.restore", "flag", key, before={"archived": current.archived}, after={"archived": False}
    )
    return updated


def put_segment(segment: Segment, version: int | None) -> dict[str, Any]:
    new_version = store.put_segment(segment, version)
    audit.record("flags.segment", "segment", segment.key, after=segment.model_dump(mode="json"))
    return {**segment.model_dump(mode="json"), "version": new_version}


def delete_segment(key: str) -> None:
    before, _ = store.get_segment(key)
    store.delete_segment(key)
    audit.record("flags.segment_delete", "segment", key, before=before.model_dump(mode="json"))


# --- the daily stale scan -----------------------------------------------------------------------


class StaleScanPayload(BaseModel):
    pass


def stale_reasons(flag: Flag, last_evaluated: str | None, now: datetime, days: int) -> list[str]:
    """Why a flag may be stale: a temporary flag unchanged, served at 100%, or not evaluated, for `days`."""
    cutoff = now - timedelta(days=days)
    unchanged = datetime.fromisoformat(flag.updated_at) < cutoff
    reasons = []
    if flag.kind == "temporary" and unchanged:
        reasons.append(f"temporary and unchanged for {days} days")
    full = flag.rollout is not None and (
        flag.rollout.percentage == 100
        or (flag.rollout.weights and sum(1 for w in flag.rollout.weights.values() if w) == 1)
    )
    if flag.enabled and full and not flag.rules and unchanged:
        reasons.append(f"served at 100% for {days} days")
    created = datetime.fromisoformat(flag.created_at)
    if created < cutoff and (last_evaluated is None or datetime.fromisoformat(last_evaluated) < cutoff):
        reasons.append(f"not evaluated for {days} days")
    return reasons


@job_type("flags.stale_scan", StaleScanPayload, max_attempts=2, timeout_s=280)
def stale_scan(payload: StaleScanPayload, ctx: JobContext) -> dict[str, Any]:
    """Mark flags `potentially_stale` (temporary and unchanged, at 100%, or not evaluated, for N days)."""
    from underlay.redis_client import get_redis
    from underlay.redis_client import key as rkey
    from underlay.settings import get_settings

    days = get_settings().flags.stale_days
    now = datetime.now(UTC)
    flags, _, _ = store.load_all()
    stale: dict[str, list[str]] = {}
    last_seen = get_redis().mget([rkey("flags", "last", f.key) for f in flags]) if flags else []
    for flag, seen in zip(flags, last_seen, strict=True):
        if flag.archived:
            continue
        seen_at = seen.decode() if isinstance(seen, bytes) else seen
        reasons = stale_reasons(flag, seen_at, now, days)
        if reasons != flag.stale_reasons:
            store.mark_stale(flag, reasons)
        if reasons:
            stale[flag.key] = reasons
    events.publish("FeatureFlagAnalyticsCollected", {"flags": len(flags), "potentially_stale": stale})
    return {"flags": len(flags), "potentially_stale": sorted(stale)}
