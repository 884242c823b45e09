"""The audit chain: append-only entries in DynamoDB, each hash-linked to the one before.

Items in the audit table (partition `pk`, sort `sk`):
- an entry: `pk = CHAIN#main`, `sk = <seq, 15 digits>`, with `seq`, `prev_hash` and `hash`, where
  `hash = sha256(canonical JSON of the entry's fields + prev_hash)`; `before`/`after` are stored as canonical JSON
  text so that what is hashed is exactly what is stored (no float/Decimal drift);
- the head: `pk = HEAD#main`, `sk = HEAD`, holding the last `seq` and `hash`.

An append is ONE `TransactWriteItems`: put the entry if its key is new, and put the head if it still holds the
`seq` we linked to. A writer that loses the race gets the current head back in the cancellation reasons, relinks
and retries, so concurrent writers never fork the chain. The head is cached per process, so a warm writer makes
exactly one AWS call per entry.

A transaction can succeed and its reply be lost (the SDK then sends it again, or the caller retries): the retry is
cancelled, and the cancellation reasons show our own entry at the seq we wrote (the entry put returns the item it
collided with) or our entry's id in the head. Then the append already happened: it returns that entry instead of
relinking onto it and writing it a second time.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from typing import Any, NamedTuple

from underlay.aws import error_code
from underlay.items import to_item

CHAIN = "main"
ENTRY_PK = f"CHAIN#{CHAIN}"
HEAD_KEY = {"pk": {"S": f"HEAD#{CHAIN}"}, "sk": {"S": "HEAD"}}
GENESIS_HASH = "0" * 64
SEQ_DIGITS = 15
# The fields covered by the hash, in the item as stored (strings, and `seq`/`expires_at` as numbers).
HASHED_FIELDS = (
    "id",
    "ts",
    "chain",
    "seq",
    "actor",
    "tenant",
    "action",
    "entity_type",
    "entity_id",
    "entity",
    "result",
    "before",
    "after",
    "source_ip",
    "user_agent",
    "correlation_id",
    "expires_at",
)


def sort_key(seq: int) -> str:
    return str(seq).zfill(SEQ_DIGITS)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def entry_hash(fields: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 over the canonical JSON of the hashed fields plus the previous entry's hash."""
    covered = {name: fields.get(name) for name in HASHED_FIELDS}
    return hashlib.sha256((canonical_json(covered) + prev_hash).encode()).hexdigest()


class Head(NamedTuple):
    seq: int
    hash: str
    id: str = ""  # the id of the entry at `seq` (empty at genesis)


GENESIS = Head(0, GENESIS_HASH)


class AuditChain:
    """Appends entries to the chain. One per process (`underlay.audit.writer()`); thread-safe."""

    def __init__(self, table: str, *, client: Any = None, max_attempts: int = 30) -> None:
        self.table = table
        self._client = client
        self.max_attempts = max_attempts
        self._head: Head | None = None
        self._lock = threading.Lock()
        self.conflicts = 0  # lost races in this process (tests and benchmarks read it)

    @property
    def client(self) -> Any:
        if self._client is None:
            from underlay.aws import client

            self._client = client("dynamodb")
        return self._client

    def read_head(self) -> Head:
        item = self.client.get_item(TableName=self.table, Key=HEAD_KEY, ConsistentRead=True).get("Item")
        return _head(item) if item else GENESIS

    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Link `fields` (an entry without seq/hashes) after the head and write it. Returns the stored fields."""
        from botocore.exceptions import ClientError

        head = self._head
        written: dict[str, Any] | None = None  # the entry of the last attempt, which may have been applied
        for attempt in range(1, self.max_attempts + 1):
            if head is None:
                head = self.read_head()
            if written is not None and head.id == written["id"] and head.seq == written["seq"]:
                return self._written(written)  # the last attempt was applied; its reply was lost
            entry = {**fields, "seq": head.seq + 1, "prev_hash": head.hash}
            entry["hash"] = entry_hash(entry, head.hash)
            item = {"pk": {"S": ENTRY_PK}, "sk": {"S": sort_key(entry["seq"])}, **to_item(entry)}
            head_item = {
                **HEAD_KEY,
                "seq": {"N": str(entry["seq"])},
                "hash": {"S": entry["hash"]},
                "id": {"S": entry["id"]},
            }
            if head.seq == 0:
                head_condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
            else:
                head_condition = {
                    "ConditionExpression": "seq = :seq",
                    "ExpressionAttributeValues": {":seq": {"N": str(head.seq)}},
                }
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": item,
                                "ConditionExpression": "attribute_not_exists(pk)",
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": head_item,
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                                **head_condition,
                            }
                        },
                    ]
                )
            except ClientError as error:
                if error_code(error) != "TransactionCanceledException":
                    raise
                response = dict(error.response)
                head = _head_from_cancellation(response)  # None: read it again
                if _entry_id_from_cancellation(response) == entry["id"] or (
                    head is not None and head.id == entry["id"] and head.seq == entry["seq"]
                ):
                    return self._written(entry, head)  # this very transaction was applied (a lost reply)
                written = entry
                with self._lock:
                    self.conflicts += 1
                time.sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))  # noqa: S311 (jitter)
                continue
            return self._written(entry)
        raise RuntimeError(f"audit chain: no append after {self.max_attempts} attempts (heavy contention)")

    def _written(self, entry: dict[str, Any], newer: Head | None = None) -> dict[str, Any]:
        """`entry` is in the chain: cache the head (`newer` when another writer already linked after it)."""
        head = (
            newer
            if newer is not None and newer.seq > entry["seq"]
            else Head(entry["seq"], entry["hash"], entry["id"])
        )
        with self._lock:
            self._head = head
        return entry


def _head(item: dict[str, Any]) -> Head:
    return Head(int(item["seq"]["N"]), item["hash"]["S"], item.get("id", {}).get("S", ""))


def _head_from_cancellation(response: dict[str, Any]) -> Head | None:
    """The head (seq, hash and its entry's id) as the cancelled transaction found it, if it was returned."""
    reasons = response.get("CancellationReasons") or []
    if len(reasons) > 1:
        old = reasons[1].get("Item")
        if old and "seq" in old:
            return _head(old)
    return None


def _entry_id_from_cancellation(response: dict[str, Any]) -> str | None:
    """The id of the entry already at the seq the cancelled transaction tried to write, if it was returned."""
    reasons = response.get("CancellationReasons") or []
    old = reasons[0].get("Item") if reasons else None
    return old.get("id", {}).get("S") if old else None
