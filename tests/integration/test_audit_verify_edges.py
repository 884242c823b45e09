"""Edge cases of the audit log: retention gaps, verify ranges, lost replies, digest keys, naive dates."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from underlay import audit
from underlay.audit import digest, verify
from underlay.audit.chain import AuditChain, canonical_json, entry_hash
from underlay.errors import ValidationFailedError

from tests.integration.test_audit import call, delete, item, put, table, write

# --- 1. retention: TTL leaves gaps of expired entries between ones kept longer ------------------------


def chain_of(names: dict[str, str], specs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Entries (action, days ago), oldest first, as they were written then."""
    chain = AuditChain(table(names))
    now = datetime.now(UTC)
    return [
        chain.append(audit.build_entry(action, "thing", str(n), now=now - timedelta(days=days)))
        for n, (action, days) in enumerate(specs)
    ]


OLD_AND_NEW = [
    ("config.update", 500),  # 1: critical, kept 7 years
    ("flags.update", 500),  # 2: expired after 365 days
    ("flags.update", 450),  # 3: expired
    ("config.update", 400),  # 4: critical
    ("flags.update", 10),  # 5
    ("flags.update", 5),  # 6
]


def test_a_gap_of_expired_entries_is_not_missing(aws: dict[str, str]) -> None:
    chain_of(aws, OLD_AND_NEW)
    for seq in (2, 3):
        delete(aws, seq)  # what TTL does, out of order: 1 and 4 stay
    result = verify.verify()
    assert result["ok"], result
    assert result["expired_gaps"] == [[2, 3]] and result["checked"] == 4
    # an explicit range starting inside the gap too
    ranged = verify.verify(2, 6)
    assert ranged["ok"] and ranged["expired_gaps"] == [[2, 3]] and ranged["checked"] == 3


def test_a_gap_before_a_young_entry_is_still_missing(aws: dict[str, str]) -> None:
    chain_of(aws, OLD_AND_NEW)
    delete(aws, 3)
    delete(aws, 5)  # entry 6 is 5 days old: 5 cannot have expired
    result = verify.verify()
    assert not result["ok"] and result["expired_gaps"] == [[3, 3]]
    assert (result["first_broken"]["seq"], result["first_broken"]["reason"]) == (5, "missing")


# --- 2. ranges ----------------------------------------------------------------------------------------


def test_to_beyond_the_head_without_a_digest_is_clamped(aws: dict[str, str]) -> None:
    write(3)
    result = verify.verify(1, 10)
    assert result["ok"] and result["to"] == 3 and result["checked"] == 3
    status, body = call("GET", "/v1/audit-logs/verify?from=2&to=50")
    assert status == 200 and body["ok"] and body["checked"] == 2


def test_from_after_to_is_a_validation_error(aws: dict[str, str]) -> None:
    write(3)
    with pytest.raises(ValidationFailedError) as raised:
        verify.verify(3, 2)
    assert raised.value.errors[0].field == "from"  # type: ignore[attr-defined]
    status, problem = call("GET", "/v1/audit-logs/verify?from=3&to=2")
    assert status == 422 and problem["errors"][0]["field"] == "from"


# --- 3. a lost reply: the SDK retries a transaction that was applied -----------------------------------


class LostReply:
    """The first transaction is applied but its reply is lost; the retry goes out again (`between` runs in
    the meantime, e.g. another writer). With `hide_items`, the cancellation reasons carry no items."""

    def __init__(self, client: Any, *, hide_items: bool = False, between: Any = None) -> None:
        self.client, self.hide_items, self.between, self.lost = client, hide_items, between, 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        if self.lost:
            self.lost -= 1
            self.client.transact_write_items(**kwargs)
            if self.between:
                self.between()
            try:
                return self.client.transact_write_items(**kwargs)
            except ClientError as error:
                if self.hide_items:
                    for reason in error.response.get("CancellationReasons", []):
                        reason.pop("Item", None)
                raise
        return self.client.transact_write_items(**kwargs)


@pytest.mark.parametrize("hide_items", [False, True], ids=["reasons", "reread"])
def test_a_lost_reply_does_not_write_the_entry_twice(aws: dict[str, str], hide_items: bool) -> None:
    write(1)
    client = LostReply(boto3.client("dynamodb", region_name="us-east-1"), hide_items=hide_items)
    chain = AuditChain(table(aws), client=client)
    stored = chain.append(audit.build_entry("flags.update", "flag", "once"))
    assert stored["seq"] == 2 and item(aws, 2)["id"]["S"] == stored["id"]
    head = chain.read_head()
    assert (head.seq, head.hash) == (2, stored["hash"])
    next_one = chain.append(audit.build_entry("flags.update", "flag", "next"))
    assert next_one["seq"] == 3 and next_one["prev_hash"] == stored["hash"]
    result = verify.verify()
    assert result["ok"] and result["checked"] == 3


def test_a_lost_reply_with_another_writer_in_between(aws: dict[str, str]) -> None:
    write(1)
    other = AuditChain(table(aws))
    client = LostReply(
        boto3.client("dynamodb", region_name="us-east-1"),
        between=lambda: other.append(audit.build_entry("flags.update", "flag", "other")),
    )
    chain = AuditChain(table(aws), client=client)
    stored = chain.append(audit.build_entry("flags.update", "flag", "once"))
    assert stored["seq"] == 2 and chain.read_head().seq == 3
    ids = [item(aws, seq)["id"]["S"] for seq in (1, 2, 3)]
    assert ids.count(stored["id"]) == 1
    assert verify.verify()["checked"] == 3


# --- 4. digests are verified with our key --------------------------------------------------------------


def _put_digest(names: dict[str, str], digest_fields: dict[str, Any], signature: bytes) -> None:
    body = canonical_json({"digest": digest_fields, "signature": base64.b64encode(signature).decode()})
    boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=names["UNDERLAY_BUCKETS__AUDIT"],
        Key="digests/main/0000000000000-forged.json",
        Body=body.encode(),
    )


def _forged(names: dict[str, str], key_id: str) -> dict[str, Any]:
    head = audit.writer().read_head()  # type: ignore[union-attr]
    return {
        "chain": "main",
        "seq": head.seq,
        "hash": head.hash,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "previous": None,
        "key_id": key_id,
        "algorithm": digest.ALGORITHM,
    }


def test_a_digest_signed_with_another_key_is_invalid(aws: dict[str, str]) -> None:
    write(3)
    kms = boto3.client("kms", region_name="us-east-1")
    theirs = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    fields = _forged(aws, theirs)
    signature = kms.sign(
        KeyId=theirs, Message=digest._message(fields), MessageType="DIGEST", SigningAlgorithm=digest.ALGORITHM
    )["Signature"]
    _put_digest(aws, fields, signature)
    result = verify.verify()
    assert not result["ok"] and result["first_broken"]["reason"] == "digest_invalid"
    assert result["digest"]["signature_valid"] is False


def test_a_digest_naming_an_unknown_key_is_invalid_not_an_error(aws: dict[str, str]) -> None:
    write(3)
    unknown = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    _put_digest(aws, _forged(aws, unknown), b"\x30\x06\x02\x01\x01\x02\x01\x01")
    status, result = call("GET", "/v1/audit-logs/verify")
    assert status == 200 and result["first_broken"]["reason"] == "digest_invalid"


@pytest.fixture
def no_signing_key(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    from underlay.settings import reset_settings

    write(3)
    assert digest.create(audit.writer()) is not None  # type: ignore[arg-type]
    monkeypatch.delenv("UNDERLAY_AUDIT__SIGNING_KEY_ID")
    reset_settings()
    yield aws
    reset_settings()


def test_without_a_configured_key_the_digest_key_is_used(no_signing_key: dict[str, str]) -> None:
    result = verify.verify()
    assert result["ok"] and result["digest"]["signature_valid"] is True
    unknown = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    _put_digest(no_signing_key, _forged(no_signing_key, unknown), b"\x30\x06\x02\x01\x01\x02\x01\x01")
    broken = verify.verify()
    assert broken["first_broken"]["reason"] == "digest_invalid"


# --- 5. the newest entry is checked against the head --------------------------------------------------


def test_a_rewritten_newest_entry_is_modified(aws: dict[str, str]) -> None:
    write(3)
    entry = {k: next(iter(v.values())) for k, v in item(aws, 3).items()}
    entry["seq"], entry["expires_at"] = int(entry["seq"]), int(entry["expires_at"])
    entry["after"] = json.dumps({"i": 999})
    forged = item(aws, 3)
    forged["after"], forged["hash"] = {"S": entry["after"]}, {"S": entry_hash(entry, entry["prev_hash"])}
    put(aws, forged)
    broken = verify.verify()
    assert not broken["ok"] and (broken["first_broken"]["seq"], broken["first_broken"]["reason"]) == (
        3,
        "modified",
    )
    assert verify.verify(1, 2)["ok"]  # a range that does not end at the head


# --- 6. dates: naive means UTC --------------------------------------------------------------------------


def test_naive_and_aware_dates_mix(aws: dict[str, str]) -> None:
    write(1)
    query = urllib.parse.urlencode({"from": "2024-01-01", "to": "2024-01-02T00:00:00Z"})
    status, page = call("GET", f"/v1/audit-logs?{query}")
    assert status == 200 and page["entries"] == []
    status, done = call(
        "POST", "/v1/audit-logs/export", body={"start": "2024-01-01", "end": "2024-01-02T00:00:00Z"}
    )
    assert status == 202 and done["count"] == 0


@pytest.fixture
def new_york() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_naive_dates_are_utc(aws: dict[str, str], new_york: None) -> None:
    from underlay.audit.query import Filters, list_entries

    at = datetime(2024, 1, 1, 2, 0, tzinfo=UTC)
    AuditChain(table(aws)).append(audit.build_entry("flags.update", "flag", "utc", now=at))
    entries, _ = list_entries(Filters(start=datetime(2024, 1, 1, 1, 0), end=datetime(2024, 1, 1, 3, 0)))
    assert [e["entity_id"] for e in entries] == ["utc"]


def test_dates_before_1970_are_refused(aws: dict[str, str]) -> None:
    status, problem = call("GET", "/v1/audit-logs?from=1969-12-31T00:00:00Z")
    assert status == 422 and problem["errors"][0]["field"] == "from"
    status, problem = call("GET", "/v1/audit-logs?to=1969-12-31")
    assert status == 422 and problem["errors"][0]["field"] == "to"


def test_a_date_in_year_one_with_an_offset_is_refused(aws: dict[str, str]) -> None:
    query = urllib.parse.urlencode({"from": "0001-01-01T00:00:00+01:00"})
    status, problem = call("GET", f"/v1/audit-logs?{query}")
    assert status == 422 and problem["errors"][0]["field"] == "from"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"digest": {"seq": "10"}, "signature": "AAAA"}',
        b'{"digest": {"seq": 3, "key_id": "k", "algorithm": "ECDSA_SHA_256"}, "signature": "!!"}',
    ],
    ids=["not-json", "no-key", "bad-signature"],
)
def test_an_unreadable_digest_is_invalid_not_an_error(aws: dict[str, str], body: bytes) -> None:
    write(3)
    boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=aws["UNDERLAY_BUCKETS__AUDIT"], Key="digests/main/0000000000000-forged.json", Body=body
    )
    status, result = call("GET", "/v1/audit-logs/verify")
    assert status == 200 and result["first_broken"]["reason"] == "digest_invalid"


def test_a_digest_with_our_key_and_a_garbage_signature_is_invalid(aws: dict[str, str]) -> None:
    write(3)
    fields = _forged(aws, aws["UNDERLAY_AUDIT__SIGNING_KEY_ID"])
    _put_digest(aws, fields, b"\x00" * 7000)  # longer than KMS accepts
    status, result = call("GET", "/v1/audit-logs/verify")
    assert status == 200 and result["first_broken"]["reason"] == "digest_invalid"


def test_a_forged_digest_does_not_widen_the_range(aws: dict[str, str]) -> None:
    write(3)
    fields = {**_forged(aws, aws["UNDERLAY_AUDIT__SIGNING_KEY_ID"]), "seq": 10**12}
    _put_digest(aws, fields, b"\x30\x06\x02\x01\x01\x02\x01\x01")
    status, result = call("GET", "/v1/audit-logs/verify")
    assert status == 200 and result["first_broken"]["reason"] == "digest_invalid"
