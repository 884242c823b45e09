"""Error groups: every unexpected error of every function (the request hook, the job worker, subscriptions and
the stream and SNS consumers, all through `underlay.admin.recorder.record_occurrence`), grouped in Redis.

A group's fingerprint is the exception type, its message normalized (quoted strings, UUIDs, ULIDs, hex ids and
numbers replaced by placeholders, so `job 01J... not found` and `job 01K... not found` are one group) and the
innermost frame (`package/module.py:function`). Each group keeps a count, first and last seen, the last
`admin.error_samples` correlation ids and an hourly count for the trend.

Redis keys (all under the configured prefix, all with a TTL):
- `admin:errors:groups`: sorted set, fingerprint -> last seen (epoch seconds); the least recent beyond
  `admin.error_max_groups`, and those quiet for `admin.error_retention_hours`, are dropped;
- `admin:errors:group:<fp>`: hash with type, message, frame, source, count, first_seen, last_seen;
- `admin:errors:samples:<fp>`: list of correlation ids, newest first;
- `admin:errors:hour:<h>`: sorted set, fingerprint -> occurrences in clock hour `h` (epoch hours), 25 h TTL;
- `admin:errors:total:<h>`: occurrences of every group in hour `h`, 25 h TTL.

A spike is the moment a group's count in the current hour reaches `admin.error_spike_threshold`: exactly one
writer sees the count equal the threshold (ZINCRBY is atomic), so ErrorAggregated and the `ErrorSpike` metric go
out once per group per hour without a lock. Writing an occurrence is one pipelined round trip; Redis trouble is
swallowed and counted (`AdminRecordDropped`), never raised.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from redis.client import Pipeline
    from underlay.admin.settings import AdminSettings

HOUR_TTL_SECONDS = 25 * 3600 + 600  # a full 24 h trend, plus the current hour, plus slack
TREND_HOURS = 24
MESSAGE_MAX_CHARS = 200
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
_HEX = re.compile(r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class Occurrence(NamedTuple):
    fingerprint: str
    type: str
    message: str  # normalized (and redacted): never the raw message, which may carry user data
    frame: str  # `package/module.py:function` of the innermost frame
    source: str  # the route key, `job:<type>`, `subscription:<name>` or a consumer's name
    correlation_id: str


def normalize(message: str) -> str:
    """The message with its variable parts replaced: the same error with other ids is the same group."""
    from underlay.observability import redact

    text = _QUOTED.sub("<str>", message)
    text = _UUID.sub("<uuid>", text)
    text = _ULID.sub("<id>", text)
    text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("<n>", text)
    text = " ".join(text.split())  # newlines and runs of spaces
    return str(redact(text))[:MESSAGE_MAX_CHARS]


def type_name(error: BaseException) -> str:
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def top_frame(error: BaseException) -> str:
    """`<parent dir>/<file>:<function>` of the innermost frame: stable across install paths (/var/task, /opt)."""
    tb = error.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    parts = code.co_filename.replace("\\", "/").rsplit("/", 2)
    return f"{'/'.join(parts[-2:])}:{code.co_name}"


def occurrence(error: BaseException, source: str, correlation_id: str) -> Occurrence:
    kind, message, frame = type_name(error), normalize(str(error)), top_frame(error)
    digest = hashlib.blake2b(f"{kind}\n{message}\n{frame}".encode(), digest_size=8).hexdigest()
    return Occurrence(digest, kind, message, frame, source[:200], correlation_id[:128])


# --- keys -------------------------------------------------------------------------------------------


def _key(*parts: str) -> str:
    from underlay.redis_client import key

    return key("admin", "errors", *parts)


def _hour(now: float) -> int:
    return int(now // 3600)


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- writing ----------------------------------------------------------------------------------------


def queue(pipe: Pipeline, found: Occurrence, now: float, cfg: AdminSettings) -> int:
    """Queue the writes of one occurrence on `pipe`; returns the index of its hour count in the results."""
    hour, retention = _hour(now), cfg.error_retention_hours * 3600
    groups, group, samples = (
        _key("groups"),
        _key("group", found.fingerprint),
        _key("samples", found.fingerprint),
    )
    hourly, total = _key("hour", str(hour)), _key("total", str(hour))
    index = len(pipe)
    pipe.zincrby(hourly, 1, found.fingerprint)
    pipe.expire(hourly, HOUR_TTL_SECONDS)
    pipe.zremrangebyrank(hourly, 0, -(cfg.error_max_groups + 1))  # the busiest groups of the hour stay
    pipe.incr(total)
    pipe.expire(total, HOUR_TTL_SECONDS)
    pipe.zadd(groups, {found.fingerprint: now})
    pipe.zremrangebyscore(groups, "-inf", now - retention)  # their hashes have expired
    pipe.zremrangebyrank(groups, 0, -(cfg.error_max_groups + 1))  # the least recently seen go
    pipe.expire(groups, retention)
    pipe.hsetnx(group, "first_seen", repr(now))
    pipe.hset(
        group,
        mapping={
            "type": found.type,
            "message": found.message,
            "frame": found.frame,
            "source": found.source,
            "last_seen": repr(now),
        },
    )
    pipe.hincrby(group, "count", 1)
    pipe.expire(group, retention)
    if found.correlation_id:
        pipe.lpush(samples, found.correlation_id)
        pipe.ltrim(samples, 0, cfg.error_samples - 1)
        pipe.expire(samples, retention)
    return index


def check_spike(found: Occurrence, hour_count: Any, cfg: AdminSettings) -> bool:
    """After the write: the one writer that brought the hour's count to the threshold reports the spike."""
    count = int(float(hour_count))
    if count != cfg.error_spike_threshold:
        return False
    from underlay import events
    from underlay.observability import emit_metric, get_logger

    detail = {
        "fingerprint": found.fingerprint,
        "type": found.type,
        "message": found.message,
        "frame": found.frame,
        "source": found.source,
        "count_this_hour": count,
        "threshold": cfg.error_spike_threshold,
    }
    get_logger().warning("error spike", extra={"error_group": detail})
    emit_metric("ErrorSpike")
    events.publish("ErrorAggregated", detail)
    return True


# --- reading ----------------------------------------------------------------------------------------


def _redis() -> Any:
    from underlay.redis_client import get_redis

    return get_redis()


def _trend_hours(now: float) -> list[int]:
    """The last 24 clock hours, oldest first, the current one last."""
    current = _hour(now)
    return list(range(current - TREND_HOURS + 1, current + 1))


def _group_view(fingerprint: str, fields: dict[bytes, bytes], samples: list[bytes], trend: list[Any]) -> dict:
    text = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
    counts = [int(float(c)) if c is not None else 0 for c in trend]
    return {
        "fingerprint": fingerprint,
        "type": text.get("type", ""),
        "message": text.get("message", ""),
        "frame": text.get("frame", ""),
        "source": text.get("source", ""),
        "count": int(text.get("count", 0)),
        "last_24h": sum(counts),
        "first_seen": _iso(float(text.get("first_seen", 0))),
        "last_seen": _iso(float(text.get("last_seen", 0))),
        "samples": [s.decode(errors="replace") for s in samples],
        "trend": counts,
    }


def _details(fingerprints: list[str], now: float) -> list[dict[str, Any]]:
    """Full views of these groups, in order, in one round trip (a group that expired meanwhile is left out)."""
    hours = _trend_hours(now)
    pipe = _redis().pipeline(transaction=False)
    for fp in fingerprints:
        pipe.hgetall(_key("group", fp))
        pipe.lrange(_key("samples", fp), 0, -1)
        for hour in hours:
            pipe.zscore(_key("hour", str(hour)), fp)
    replies = pipe.execute()
    stride = 2 + len(hours)
    views = []
    for i, fp in enumerate(fingerprints):
        fields, samples, *trend = replies[i * stride : (i + 1) * stride]
        if fields:
            views.append(_group_view(fp, fields, samples, trend))
    return views


def list_groups(
    limit: int = 20, cursor: str | None = None, *, now: float | None = None
) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
    """One page of groups, most recently seen first, with the signed cursor of the next page, and the trend's
    hours. Raises `DependencyUnavailableError` when Redis cannot be reached."""
    from underlay import pagination

    now = time.time() if now is None else now
    scope = "admin:errors"
    high = 0.0
    after: str | None = None
    if cursor:
        position = pagination.decode(cursor, scope)
        high, after = float(position["s"]), str(position["f"])

    def read() -> tuple[list[dict[str, Any]], str | None]:
        groups = _redis()
        if after is None:
            rows = groups.zrevrangebyscore(
                _key("groups"), "+inf", "-inf", start=0, num=limit + 1, withscores=True
            )
        else:
            # The order is (score, member) descending. After the cursor come the members sharing its score with
            # a smaller member (one in practice: scores are time.time()), then those strictly below it.
            pipe = groups.pipeline(transaction=False)
            pipe.zrevrangebyscore(_key("groups"), high, high, withscores=True)
            pipe.zrevrangebyscore(
                _key("groups"), f"({high!r}", "-inf", start=0, num=limit + 1, withscores=True
            )
            ties, below = pipe.execute()
            rows = [(m, s) for m, s in ties if m.decode() < after] + below
        page = [(m.decode(), s) for m, s in rows]
        more = len(page) > limit
        page = page[:limit]
        views = _details([fp for fp, _ in page], now)
        last = {"s": page[-1][1], "f": page[-1][0]} if more and page else None
        return views, pagination.encode(last, scope)

    from underlay.admin.recorder import redis_read

    views, next_cursor = redis_read(read)
    hours = _trend_hours(now)
    trend = {"unit": "hour", "from": _iso(hours[0] * 3600), "points": len(hours)}
    return views, next_cursor, trend


def summary(top: int, *, now: float | None = None) -> dict[str, Any]:
    """Errors in the last 24 h, how many groups exist, and the `top` groups by their 24 h count."""
    from underlay.admin.recorder import redis_read

    now = time.time() if now is None else now
    hours = _trend_hours(now)

    def read() -> tuple[Any, list[tuple[str, int]], Any, dict[str, dict[str, Any]]]:
        pipe = _redis().pipeline(transaction=False)
        pipe.mget([_key("total", str(h)) for h in hours])
        pipe.zunion([_key("hour", str(h)) for h in hours], withscores=True)
        pipe.zcard(_key("groups"))
        totals, busiest, groups = pipe.execute()
        ranked = sorted(((m.decode(), int(s)) for m, s in busiest), key=lambda item: (-item[1], item[0]))
        ranked = ranked[:top]
        views = {v["fingerprint"]: v for v in _details([fp for fp, _ in ranked], now)} if ranked else {}
        return totals, ranked, groups, views

    totals, ranked, groups, views = redis_read(read)
    return {
        "last_24h": sum(int(t) for t in totals if t is not None),
        "groups": int(groups),
        "top": [
            {k: views[fp][k] for k in ("fingerprint", "type", "message", "frame", "source", "last_seen")}
            | {"last_24h": n}
            for fp, n in ranked
            if fp in views
        ],
    }
