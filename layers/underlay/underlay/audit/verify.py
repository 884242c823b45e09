"""Verify the chain over a range of sequence numbers, and against the latest signed digest.

Reasons for the first broken entry:
- `missing`: a sequence number has no entry (deleted from the middle);
- `reordered`: an entry sits at another position than the `seq` it was hashed with (entries swapped);
- `modified`: an entry's fields no longer match its hash, or it was rewritten with a recomputed hash (then the
  next entry's link, the head, or the digest no longer matches it);
- `truncated`: the latest digest covers entries that are gone (the newest entries were deleted);
plus `digest_invalid` when the digest's signature does not verify (see `underlay.audit.digest.check`).

Retention leaves gaps. Entries expire after `audit.retention_days`, critical ones after `critical_retention_days`,
and TTL deletes them out of order, so the table can hold an old critical entry, then a run of expired ones, then
the next kept entry. A gap before a present entry is reported in `expired_gaps` (`[[from, to], ...]`), not as
`missing`, when the entry after it is older than `retention_days`: everything before that entry is older still, so
it may legitimately have expired. Verification then relinks from that entry (its `prev_hash` cannot be checked
against an entry that is gone; its own hash still is). A gap before an entry younger than the retention is
`missing`. Deleting entries older than the retention is indistinguishable from expiry in the table: that is what
the archive (TTL removals only, from the table's stream; check each expired gap against it) and the signed digests
are for.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from underlay.audit.chain import ENTRY_PK, GENESIS_HASH, entry_hash, sort_key
from underlay.errors import FieldError, ValidationFailedError
from underlay.items import from_item


def _entries(table: str, low: int, high: int) -> Iterator[dict[str, Any]]:
    from underlay.aws import client

    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
        "ExpressionAttributeValues": {
            ":pk": {"S": ENTRY_PK},
            ":lo": {"S": sort_key(low)},
            ":hi": {"S": sort_key(high)},
        },
        "ConsistentRead": True,
    }
    while True:
        page = client("dynamodb").query(**request)
        for item in page.get("Items", []):
            yield from_item(item)
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _oldest(table: str) -> int | None:
    from underlay.aws import client

    page = client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": ENTRY_PK}},
        ProjectionExpression="sk",
        Limit=1,
    )
    items = page.get("Items", [])
    return int(items[0]["sk"]["S"]) if items else None


def _older_than(entry: dict[str, Any], cutoff: datetime) -> bool:
    """Whether the entry was written before `cutoff` (False when its time cannot be read)."""
    try:
        written = datetime.fromisoformat(str(entry.get("ts")))
    except ValueError:
        return False
    return (written if written.tzinfo else written.replace(tzinfo=UTC)) < cutoff


def _broken(seq: int, reason: str, detail: str, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    found = {"seq": seq, "reason": reason, "detail": detail}
    if entry is not None:
        found["id"] = entry.get("id")
    return found


def verify(start: int | None = None, end: int | None = None) -> dict[str, Any]:
    """Recompute the chain from `start` to `end` (default: all of it) and check it against the latest digest."""
    from underlay.audit import digest as digests
    from underlay.audit import writer as get_writer
    from underlay.errors import ConfigInvalidError
    from underlay.settings import get_settings

    settings = get_settings().audit
    if start is not None and end is not None and start > end:
        raise ValidationFailedError(
            "from is after to.", errors=[FieldError("from", "must not be after 'to'")]
        )
    writer = get_writer()
    if writer is None:
        raise ConfigInvalidError("The audit table is not configured for this function.")
    head = writer.read_head()
    latest = digests.latest() if get_settings().resource("bucket", "audit") else None
    digest, signature_valid = digests.check(latest[1]) if latest else (None, None)
    # By default start at the oldest entry still in the table: older ones left by TTL for the archive
    # (`underlay.audit.archive.verify_entries` checks those files), so they are not "missing".
    first = max(1, start or _oldest(writer.table) or 1)
    # Nothing exists, or was signed, beyond the tip (a digest that does not verify vouches for nothing).
    tip = max(head.seq, digest["seq"] if digest and signature_valid else 0)
    last = min(end, tip) if end is not None else tip
    if last - first + 1 > settings.verify_max_entries:
        raise ValidationFailedError(
            "The range is too large; verify it in parts.",
            errors=[FieldError("to", f"at most {settings.verify_max_entries} entries per call")],
        )
    gaps: list[list[int]] = []
    result: dict[str, Any] = {
        "ok": True,
        "checked": 0,
        "from": first,
        "to": last,
        "head": {"seq": head.seq, "hash": head.hash},
        "digest": None
        if digest is None
        else {"seq": digest["seq"], "created_at": digest["created_at"], "signature_valid": signature_valid},
        "expired_gaps": gaps,
    }

    def fail(found: dict[str, Any]) -> dict[str, Any]:
        result["ok"] = False
        result["first_broken"] = found
        return result

    if digest is not None and not signature_valid:
        return fail(_broken(digest["seq"], "digest_invalid", "the latest digest's signature does not verify"))
    if first > last:  # the range lies beyond the head (and the digest): there is nothing to check
        return result

    # Anything written before this may have expired (the shorter retention applies to most entries).
    expired_before = datetime.now(UTC) - timedelta(
        days=min(settings.retention_days, settings.critical_retention_days)
    )
    prev_hash, prev_entry = GENESIS_HASH, None
    if first > 1:  # link the first entry to the one before it, if the table still holds it
        before = list(_entries(writer.table, first - 1, first - 1))
        prev_hash = before[0]["hash"] if before else ""
        prev_entry = before[0] if before else None
    expected = first
    hashes: dict[int, str] = {}
    for entry in _entries(writer.table, first, last):
        position = int(entry["sk"])
        if position != expected:
            if not _older_than(entry, expired_before):
                return fail(_broken(expected, "missing", f"no entry at seq {expected}"))
            gaps.append([expected, position - 1])  # expired (or deleted when it could have): see the archive
            prev_hash, prev_entry, expected = "", None, position
        if entry.get("seq") != position:
            return fail(
                _broken(
                    position,
                    "reordered",
                    f"the entry at {position} was hashed as seq {entry.get('seq')}",
                    entry,
                )
            )
        if entry_hash(entry, entry.get("prev_hash", "")) != entry.get("hash"):
            return fail(_broken(position, "modified", "the entry no longer matches its hash", entry))
        if prev_hash and entry.get("prev_hash") != prev_hash:
            # This entry is intact, so the one before it was rewritten (with a recomputed hash of its own).
            return fail(
                _broken(
                    position - 1, "modified", "rewritten: the next entry's link does not match it", prev_entry
                )
            )
        prev_hash, prev_entry = entry["hash"], entry
        hashes[position] = entry["hash"]
        expected += 1
        result["checked"] += 1
    if expected <= last:  # `last` is at most the head or the digest's seq: these entries existed
        reason = "truncated" if digest is not None and expected <= digest["seq"] else "missing"
        return fail(_broken(expected, reason, f"entries from seq {expected} are gone"))
    if first <= head.seq <= last and hashes.get(head.seq) != head.hash:
        # The newest entry has no next link to give away a rewrite with a recomputed hash: the head does.
        return fail(_broken(head.seq, "modified", "the entry does not match the chain's head", prev_entry))
    if digest is not None and first <= digest["seq"] <= last and hashes.get(digest["seq"]) != digest["hash"]:
        return fail(_broken(digest["seq"], "modified", "the entry does not match the signed digest"))
    return result
