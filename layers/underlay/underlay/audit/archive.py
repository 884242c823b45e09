"""Archive audit entries that DynamoDB's TTL removes, before they are gone: gzip JSONL in the audit bucket by
entry date (`archive/YYYY/MM/DD/<first seq>-<last seq>.jsonl.gz`), written from the table's stream.

Only TTL removals are archived (stream records whose `userIdentity` is the DynamoDB service), and only chain
entries (not the head). The object key comes from the records' sequence numbers, so a retried batch rewrites the
same key. An archive file can be verified on its own with `verify_entries` (each entry's hash, and the links
between consecutive entries); the entry after the file's last one in the table links to it.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from typing import Any

from underlay.audit.chain import ENTRY_PK, GENESIS_HASH, entry_hash
from underlay.items import from_item


def _ttl_removal(record: dict[str, Any]) -> bool:
    identity = record.get("userIdentity") or {}
    return (
        record.get("eventName") == "REMOVE"
        and identity.get("type") == "Service"
        and identity.get("principalId") == "dynamodb.amazonaws.com"
    )


def archive_stream(event: dict[str, Any]) -> dict[str, Any]:
    """Archive the TTL-removed entries of one stream batch; raise (so the batch is retried) if S3 fails."""
    from underlay import events
    from underlay.audit.digest import _bucket
    from underlay.aws import client

    by_date: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in event.get("Records", []):
        image = (record.get("dynamodb") or {}).get("OldImage") or {}
        if not _ttl_removal(record) or image.get("pk", {}).get("S") != ENTRY_PK:
            continue
        entry = from_item(image)
        by_date[entry["ts"][:10].replace("-", "/")].append(entry)
    keys = []
    for date, entries in sorted(by_date.items()):
        entries.sort(key=lambda e: e["seq"])
        body = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in entries)
        key = f"archive/{date}/{entries[0]['seq']:015d}-{entries[-1]['seq']:015d}.jsonl.gz"
        client("s3").put_object(
            Bucket=_bucket(),
            Key=key,
            Body=gzip.compress(body.encode(), mtime=0),
            ContentType="application/x-ndjson",
            ContentEncoding="gzip",
            ChecksumAlgorithm="SHA256",
        )
        keys.append(key)
    archived = sum(len(e) for e in by_date.values())
    if archived:
        events.publish("LogsArchived", {"entries": archived, "keys": keys})
    return {"archived": archived, "keys": keys}


def verify_entries(entries: list[dict[str, Any]], prev_hash: str | None = None) -> dict[str, Any]:
    """Check archived entries (in seq order): each one's hash, and each link to the one before it."""
    expected_prev = prev_hash
    for position, entry in enumerate(entries):
        if entry_hash(entry, entry.get("prev_hash", "")) != entry.get("hash"):
            return {"ok": False, "first_broken": {"seq": entry.get("seq"), "reason": "modified"}}
        if position and entry["seq"] != entries[position - 1]["seq"] + 1:
            return {
                "ok": False,
                "first_broken": {"seq": entries[position - 1]["seq"] + 1, "reason": "missing"},
            }
        if expected_prev is not None and entry.get("prev_hash") != expected_prev:
            return {"ok": False, "first_broken": {"seq": entry.get("seq", 0) - 1, "reason": "modified"}}
        expected_prev = entry["hash"]
    return {
        "ok": True,
        "checked": len(entries),
        "genesis": bool(entries) and entries[0].get("prev_hash") == GENESIS_HASH,
    }


def read_archive(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines() if line]
