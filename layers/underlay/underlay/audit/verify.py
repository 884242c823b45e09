"""Verify the chain over a range of sequence numbers, and against the latest signed digest.

Reasons for the first broken entry:
- `missing`: a sequence number has no entry (deleted from the middle);
- `reordered`: an entry sits at another position than the `seq` it was hashed with (entries swapped);
- `modified`: an entry's fields no longer match its hash, or it was rewritten with a recomputed hash (then the
  next entry's link, or the digest, no longer matches it);
- `truncated`: the latest digest covers entries that are gone (the newest entries were deleted);
plus `digest_invalid` when the digest's signature does not verify.
"""

from __future__ import annotations

from collections.abc import Iterator
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

    writer = get_writer()
    if writer is None:
        raise ConfigInvalidError("The audit table is not configured for this function.")
    head = writer.read_head()
    latest = digests.latest() if get_settings().resource("bucket", "audit") else None
    digest, signature_valid = digests.check(latest[1]) if latest else (None, None)
    # By default start at the oldest entry still in the table: older ones left by TTL for the archive
    # (`underlay.audit.archive.verify_entries` checks those files), so they are not "missing".
    first = max(1, start or _oldest(writer.table) or 1)
    last = end if end is not None else max(head.seq, digest["seq"] if digest else 0)
    if last - first + 1 > get_settings().audit.verify_max_entries:
        raise ValidationFailedError(
            "The range is too large; verify it in parts.",
            errors=[FieldError("to", f"at most {get_settings().audit.verify_max_entries} entries per call")],
        )
    result: dict[str, Any] = {
        "ok": True,
        "checked": 0,
        "from": first,
        "to": last,
        "head": {"seq": head.seq, "hash": head.hash},
        "digest": None
        if digest is None
        else {"seq": digest["seq"], "created_at": digest["created_at"], "signature_valid": signature_valid},
    }

    def fail(found: dict[str, Any]) -> dict[str, Any]:
        result["ok"] = False
        result["first_broken"] = found
        return result

    if digest is not None and not signature_valid:
        return fail(_broken(digest["seq"], "digest_invalid", "the latest digest's signature does not verify"))

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
            return fail(_broken(expected, "missing", f"no entry at seq {expected}"))
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
    if expected <= last and (digest is None or expected <= digest["seq"] or expected <= head.seq):
        reason = "truncated" if digest is not None and expected <= digest["seq"] else "missing"
        return fail(_broken(expected, reason, f"entries from seq {expected} are gone"))
    if digest is not None and first <= digest["seq"] <= last and hashes.get(digest["seq"]) != digest["hash"]:
        return fail(_broken(digest["seq"], "modified", "the entry does not match the signed digest"))
    return result
