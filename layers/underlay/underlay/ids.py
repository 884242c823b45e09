"""ULIDs: 48-bit millisecond time and 80 random bits in Crockford base32. They sort by time, so a table or index
sorted by id lists newest first and a date range is `id BETWEEN ulid_bound(start) AND ulid_bound(end, upper)`."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int | None = None) -> str:
    """A ULID: 48-bit millisecond time and 80 random bits in Crockford base32; sorts by time."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return _encode((ms << 80) | int.from_bytes(os.urandom(10), "big"))


def ulid_for(ms: int, seed: str) -> str:
    """A deterministic ULID: the same `seed` at the same millisecond is the same id (an SQS message id, say)."""
    return _encode((ms << 80) | int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big"))


def ulid_bound(ms: int, *, upper: bool) -> str:
    """The smallest (or largest) ULID of a millisecond: for `id BETWEEN` date ranges."""
    return _encode((ms << 80) | (((1 << 80) - 1) if upper else 0))


def id_range(start: datetime | None, end: datetime | None) -> tuple[str, str]:
    """The ULIDs bounding a date range (either end open): `id BETWEEN low AND high` on an index sorted by id."""
    low = ulid_bound(int(start.timestamp() * 1000), upper=False) if start else "0"
    high = ulid_bound(int(end.timestamp() * 1000), upper=True) if end else "Z" * 26
    return low, high


def _encode(value: int) -> str:
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))
