"""Opaque, tamper-proof list cursors (SPEC: `limit`, `cursor`, `next_cursor`; a forged cursor gets 400).

    page = table.query(..., **({"ExclusiveStartKey": decode(cursor, scope)} if cursor else {}))
    next_cursor = encode(page.get("LastEvaluatedKey"), scope)

A cursor is base64url(JSON) plus an HMAC-SHA256 tag over the payload and a `scope` string naming the list and
its filters (say `audit:user=alice`), so a cursor cannot be edited, nor replayed against another query.
The key is `UNDERLAY_HTTP__CURSOR_SECRET`, or the Secrets Manager secret `UNDERLAY_HTTP__CURSOR_SECRET_ARN` on AWS;
a dev stage with neither uses a fixed development key, and any other stage refuses to sign (503 CONFIG_INVALID).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

from underlay.errors import ConfigInvalidError, InvalidCursorError

_DEV_KEY = b"underlay-dev-cursor-key (not a secret; set UNDERLAY_HTTP__CURSOR_SECRET outside dev)"
_TAG_BYTES = 16


@lru_cache(maxsize=1)
def _key() -> bytes:
    from underlay.settings import get_settings

    settings = get_settings()
    if settings.http.cursor_secret is not None or settings.http.cursor_secret_arn:
        from underlay.config.secrets import resolve

        return str(resolve(settings.http.cursor_secret, settings.http.cursor_secret_arn)).encode()
    if settings.stage == "dev":
        return _DEV_KEY
    raise ConfigInvalidError("No cursor signing key is configured (http.cursor_secret_arn).")


def scope_of(name: str, filters: Any) -> str:
    """The scope a list's cursors are bound to: its name and every filter (a NamedTuple) with its value."""
    parts = (
        f"{k}={v.isoformat() if hasattr(v, 'isoformat') else v or ''}" for k, v in filters._asdict().items()
    )
    return f"{name}:" + "|".join(parts)


def reset_key() -> None:
    _key.cache_clear()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(payload: bytes, scope: str) -> bytes:
    return hmac.new(_key(), scope.encode() + b"\0" + payload, hashlib.sha256).digest()[:_TAG_BYTES]


def encode(position: dict[str, Any] | None, scope: str) -> str | None:
    """The cursor for `position` (e.g. DynamoDB's LastEvaluatedKey), or None at the end of the list."""
    if not position:
        return None
    payload = json.dumps(position, separators=(",", ":"), sort_keys=True, default=_plain).encode()
    return f"{_b64(payload)}.{_b64(_tag(payload, scope))}"


def _plain(value: Any) -> Any:
    """DynamoDB numbers (Decimal) as int or float, so a decoded key is valid as ExclusiveStartKey."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} cannot be part of a cursor")


def decode(cursor: str, scope: str) -> dict[str, Any]:
    """The position a cursor stands for. Raises 400 INVALID_CURSOR if it was forged, edited or is for another list."""
    try:
        body, tag = cursor.split(".", 1)
        payload = _unb64(body)
        if not hmac.compare_digest(_unb64(tag), _tag(payload, scope)):
            raise ValueError("bad tag")
        position = json.loads(payload)
        if not isinstance(position, dict):
            raise ValueError("not an object")
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursorError("The cursor is not valid for this list; start again without it.") from exc
    return position
