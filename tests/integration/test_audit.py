"""The audit log on moto: the chain, concurrency, tamper detection, queries without Scan, export, digests."""

from __future__ import annotations

import json
import threading
import urllib.parse
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from underlay import audit, context
from underlay.audit import chain as audit_chain
from underlay.audit import digest, verify
from underlay.audit.chain import ENTRY_PK, entry_hash, sort_key
from underlay.aws import count_aws_calls

from tests.conftest import http_event, load_event


def table(names: dict[str, str]) -> str:
    return names["UNDERLAY_TABLES__AUDIT"]


def item(names: dict[str, str], seq: int) -> dict[str, Any]:
    client = boto3.client("dynamodb", region_name="us-east-1")
    return client.get_item(TableName=table(names), Key={"pk": {"S": ENTRY_PK}, "sk": {"S": sort_key(seq)}})[
        "Item"
    ]


def put(names: dict[str, str], value: dict[str, Any]) -> None:
    boto3.client("dynamodb", region_name="us-east-1").put_item(TableName=table(names), Item=value)


def delete(names: dict[str, str], seq: int) -> None:
    boto3.client("dynamodb", region_name="us-east-1").delete_item(
        TableName=table(names), Key={"pk": {"S": ENTRY_PK}, "sk": {"S": sort_key(seq)}}
    )


def write(n: int, **kwargs: Any) -> list[dict[str, Any]]:
    return [audit.record("flags.update", "flag", f"f{i}", after={"i": i}, **kwargs) for i in range(n)]


def test_record_links_entries_and_fills_in_the_context(aws: dict[str, str]) -> None:
    ctx = context.RequestContext("corr-1", sub="alice", source_ip="198.51.100.7", user_agent="curl/8")
    with context.bound(ctx):
        first, second = write(2)
        secret = audit.record("config.update", "setting", "sentry", after={"api_key": "sk-live-123", "n": 1})
    assert (first["seq"], second["seq"], secret["seq"]) == (1, 2, 3)
    assert first["prev_hash"] == "0" * 64 and second["prev_hash"] == first["hash"]
    assert (
        first["actor"] == "alice"
        and first["source_ip"] == "198.51.100.7"
        and first["correlation_id"] == "corr-1"
    )
    assert len(first["id"]) == 26 and first["ts"].endswith("+00:00")
    stored = json.dumps(item(aws, 3))
    assert "sk-live-123" not in stored and "[REDACTED]" in stored
    # critical actions (config.*) are kept longer than others
    assert secret["expires_at"] - first["expires_at"] > 365 * 86400
    assert verify.verify()["ok"]


def test_a_warm_write_is_one_aws_call(aws: dict[str, str]) -> None:
    from underlay import events

    write(1)  # the first write of a process reads the head
    with events.batch(), count_aws_calls() as calls:  # as in a request: AuditLogCreated leaves with the batch
        write(1)
        made = calls.by_operation
    assert made == {"dynamodb.TransactWriteItems": 1}


class OneRequestAtATime:
    """DynamoDB applies each request atomically; moto's in-process backend is not thread-safe (it deep-copies
    tables mid-transaction), so the racing writers' requests go to it one at a time. The races that matter (read
    head, link, write) still interleave freely between requests."""

    lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                return method(*args, **kwargs)

        return call


def test_twenty_concurrent_writers_keep_one_linear_chain(aws: dict[str, str]) -> None:
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []
    client = OneRequestAtATime(boto3.client("dynamodb", region_name="us-east-1"))
    conflicts = []

    def writer(n: int) -> None:
        # each thread is its own "process": its own cached head, so they really race
        chain = audit_chain.AuditChain(table(aws), client=client, max_attempts=500)
        barrier.wait()
        try:
            for i in range(3):
                chain.append(audit.build_entry("jobs.cancel", "job", f"{n}-{i}"))
        except BaseException as error:
            errors.append(error)
        conflicts.append(chain.conflicts)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(conflicts) > 0  # they did race, and the losers relinked
    result = verify.verify()
    assert result["ok"] and result["checked"] == 60 and result["head"]["seq"] == 60


@pytest.fixture
def signed(aws: dict[str, str]) -> dict[str, str]:
    """Ten entries, then a signed digest of the head."""
    write(10)
    made = digest.create(audit.writer())  # type: ignore[arg-type]
    assert made is not None and made["seq"] == 10
    return aws


def test_clean_chain_verifies_against_the_signed_digest(signed: dict[str, str]) -> None:
    result = verify.verify()
    assert result["ok"] and result["checked"] == 10
    assert result["digest"]["seq"] == 10 and result["digest"]["signature_valid"] is True
    assert digest.create(audit.writer()) is None  # type: ignore[arg-type]  # head unchanged: no new digest
    write(1)
    second = digest.create(audit.writer())  # type: ignore[arg-type]
    assert second is not None and second["previous"]["key"].startswith("digests/main/")
    s3 = boto3.client("s3", region_name="us-east-1")
    stored = s3.head_object(Bucket=signed["UNDERLAY_BUCKETS__AUDIT"], Key=second["key"])
    assert stored["ObjectLockMode"] == "COMPLIANCE"  # (moto's GetObjectRetention answers 500)
    with pytest.raises(ClientError):  # not even its owner can remove a locked version
        s3.delete_object(
            Bucket=signed["UNDERLAY_BUCKETS__AUDIT"], Key=second["key"], VersionId=stored["VersionId"]
        )


def test_an_edited_field_is_modified(signed: dict[str, str]) -> None:
    entry = item(signed, 4)
    entry["actor"] = {"S": "mallory"}
    put(signed, entry)
    broken = verify.verify()
    assert not broken["ok"] and broken["first_broken"]["seq"] == 4
    assert broken["first_broken"]["reason"] == "modified"


def test_an_entry_deleted_in_the_middle_is_missing(signed: dict[str, str]) -> None:
    delete(signed, 5)
    broken = verify.verify()["first_broken"]
    assert (broken["seq"], broken["reason"]) == (5, "missing")


def test_deleting_the_newest_entries_is_truncation(signed: dict[str, str]) -> None:
    for seq in (8, 9, 10):
        delete(signed, seq)
    head = item(signed, 7)  # rewind the head too, as a careful attacker would
    put(
        signed,
        {
            "pk": {"S": "HEAD#main"},
            "sk": {"S": "HEAD"},
            "seq": {"N": "7"},
            "hash": head["hash"],
            "id": head["id"],
        },
    )
    broken = verify.verify()["first_broken"]
    assert (broken["seq"], broken["reason"]) == (8, "truncated")


def test_swapped_entries_are_reordered(signed: dict[str, str]) -> None:
    three, six = item(signed, 3), item(signed, 6)
    three["sk"], six["sk"] = six["sk"], three["sk"]
    put(signed, three)
    put(signed, six)
    broken = verify.verify()["first_broken"]
    assert (broken["seq"], broken["reason"]) == (3, "reordered")


def test_a_rewrite_with_a_recomputed_hash_breaks_the_next_link(signed: dict[str, str]) -> None:
    entry = {k: next(iter(v.values())) for k, v in item(signed, 6).items()}
    entry["seq"], entry["expires_at"] = int(entry["seq"]), int(entry["expires_at"])
    entry["after"] = json.dumps({"i": 999})
    entry["hash"] = entry_hash(entry, entry["prev_hash"])
    forged = item(signed, 6)
    forged["after"], forged["hash"] = {"S": entry["after"]}, {"S": entry["hash"]}
    put(signed, forged)
    broken = verify.verify()["first_broken"]
    assert (broken["seq"], broken["reason"]) == (6, "modified")


def test_a_forged_digest_signature_is_caught(signed: dict[str, str]) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = signed["UNDERLAY_BUCKETS__AUDIT"]
    _key, body = digest.latest()  # type: ignore[misc]
    parsed = json.loads(body)
    parsed["digest"]["seq"] = 3  # claim less was signed
    s3.put_object(
        Bucket=bucket, Key="digests/main/0000000000000-forged.json", Body=json.dumps(parsed).encode()
    )
    broken = verify.verify()["first_broken"]
    assert broken["reason"] == "digest_invalid"


# --- the API ---------------------------------------------------------------------------------------


def call(
    method: str, path: str, *, scopes: str = "audit:read audit:export", body: Any = None
) -> tuple[int, Any]:
    from functions.audit.app import handler

    result = handler(http_event(method, path, scopes=scopes, sub="auditor", body=body), None)
    return result["statusCode"], json.loads(result["body"])


def _never_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    from underlay import aws as underlay_aws

    def refuse(**_: Any) -> None:
        raise AssertionError("a Scan in a request path")

    underlay_aws.session().events.register("before-call.dynamodb.Scan", refuse)
    monkeypatch.setattr(underlay_aws, "_scan_guard", refuse, raising=False)


def test_filters_and_pages_with_queries_only(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _never_scan(monkeypatch)
    with context.bound(context.RequestContext("c", sub="alice")):
        for i in range(5):
            audit.record("flags.toggle", "flag", "checkout", after={"i": i})
        audit.record("cache.invalidate", "cache_tag", "movies")
    with context.bound(context.RequestContext("c", sub="bob")):
        audit.record("flags.toggle", "flag", "search")
    with count_aws_calls() as calls:
        status, page = call("GET", "/v1/audit-logs?user=alice&action=flags.toggle&limit=3")
    assert calls.by_operation.get("dynamodb.Query") == 1 and "dynamodb.Scan" not in calls.by_operation
    # One Query per page: the second filter is a FilterExpression, so a page can hold fewer than `limit`.
    assert status == 200 and 1 <= len(page["entries"]) <= 3
    seen = [e["after"]["i"] for e in page["entries"]]
    while page["next_cursor"]:
        status, page = call(
            "GET", f"/v1/audit-logs?user=alice&action=flags.toggle&limit=3&cursor={page['next_cursor']}"
        )
        seen += [e["after"]["i"] for e in page["entries"]]
    assert seen == [4, 3, 2, 1, 0]
    status, by_entity = call("GET", "/v1/audit-logs?entity_type=flag&entity_id=search")
    assert [e["actor"] for e in by_entity["entries"]] == ["bob"]
    status, by_user = call("GET", "/v1/audit-logs/users/bob")
    assert {e["action"] for e in by_user["entries"]} == {"flags.toggle"}
    status, everything = call("GET", "/v1/audit-logs?limit=100")
    assert status == 200 and len(everything["entries"]) >= 7  # plus the audit.read entries of the calls above
    one = everything["entries"][-1]
    assert call("GET", f"/v1/audit-logs/{one['id']}") == (200, one)


def test_date_range_filter(aws: dict[str, str]) -> None:
    from datetime import UTC, datetime, timedelta

    from underlay.audit.chain import AuditChain

    chain = AuditChain(table(aws))
    for days_ago in (10, 5, 1):
        chain.append(
            audit.build_entry(
                "flags.update", "flag", f"d{days_ago}", now=datetime.now(UTC) - timedelta(days=days_ago)
            )
        )
    since = (datetime.now(UTC) - timedelta(days=6)).isoformat()
    until = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    status, page = call("GET", "/v1/audit-logs?" + urllib.parse.urlencode({"from": since, "to": until}))
    assert status == 200 and [e["entity_id"] for e in page["entries"]] == ["d5"]


def test_bad_queries_are_clear(aws: dict[str, str]) -> None:
    write(3)
    status, first = call("GET", "/v1/audit-logs?limit=1")
    forged = first["next_cursor"][:-3] + "AAA"
    assert call("GET", f"/v1/audit-logs?limit=1&cursor={forged}")[1]["code"] == "INVALID_CURSOR"
    # a cursor is bound to its filters: replaying it against another list is refused
    assert call("GET", f"/v1/audit-logs?limit=1&user=x&cursor={first['next_cursor']}")[0] == 400
    status, problem = call("GET", "/v1/audit-logs?entity_id=x")
    assert status == 422 and problem["errors"][0]["field"] == "entity_type"
    assert call("GET", "/v1/audit-logs/not-a-ulid")[0] == 422
    assert call("GET", "/v1/audit-logs/01ARZ3NDEKTSV4RRFFQ69G5FAV")[0] == 404
    assert call("GET", "/v1/audit-logs", scopes="flags:read")[0] == 403


def test_reading_the_log_is_audited(aws: dict[str, str]) -> None:
    write(1)
    call("GET", "/v1/audit-logs?user=alice")
    _status, page = call("GET", "/v1/audit-logs?action=audit.read")
    assert page["entries"] and page["entries"][0]["actor"] == "auditor"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_matches_the_query(aws: dict[str, str], fmt: str) -> None:
    import csv
    import io

    with context.bound(context.RequestContext("c", sub="carol")):
        write(4)
    status, listed = call("GET", "/v1/audit-logs?user=carol&limit=100")
    status, done = call("POST", "/v1/audit-logs/export", body={"user": "carol", "format": fmt})
    assert status == 202 and done["status"] == "succeeded" and done["count"] == 4
    assert done["url"].startswith("https://") and done["key"] == f"exports/{done['id']}.{fmt}"
    body = (
        boto3.client("s3", region_name="us-east-1")
        .get_object(Bucket=aws["UNDERLAY_BUCKETS__AUDIT"], Key=done["key"])["Body"]
        .read()
        .decode()
    )
    if fmt == "jsonl":
        rows = [json.loads(line) for line in body.splitlines()]
        assert rows == listed["entries"]
    else:
        rows = list(csv.DictReader(io.StringIO(body)))
        assert [r["id"] for r in rows] == [e["id"] for e in listed["entries"]]


def test_verify_endpoint(aws: dict[str, str]) -> None:
    write(3)
    digest.create(audit.writer())  # type: ignore[arg-type]
    status, result = call("GET", "/v1/audit-logs/verify")
    assert status == 200 and result["ok"] and result["checked"] == 3 and result["digest"]["signature_valid"]
    delete(aws, 2)
    status, result = call("GET", "/v1/audit-logs/verify?from=1&to=3")
    assert (
        status == 200 and result == {**result, "ok": False} and result["first_broken"]["reason"] == "missing"
    )


def _ttl_removal(image: dict[str, Any]) -> dict[str, Any]:
    event = load_event("dynamodb/stream")
    record = event["Records"][0]
    record["eventName"] = "REMOVE"
    record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    record["dynamodb"] = {"Keys": {"pk": image["pk"], "sk": image["sk"]}, "OldImage": image}
    return record


def test_ttl_removals_are_archived_and_still_verify(aws: dict[str, str]) -> None:
    from underlay.audit import archive

    from functions.audit_archive.app import handler

    write(5)
    images = [item(aws, seq) for seq in (1, 2, 3)]
    for seq in (1, 2, 3):
        delete(aws, seq)  # what TTL does
    records = [_ttl_removal(image) for image in images]
    user_delete = _ttl_removal(item(aws, 4))
    user_delete["userIdentity"] = {
        "type": "User",
        "principalId": "mallory",
    }  # not a TTL removal: not archived
    result = handler({"Records": [*records, user_delete]}, None)
    assert result["archived"] == 3 and len(result["keys"]) == 1
    key = result["keys"][0]
    assert key.endswith("/000000000000001-000000000000003.jsonl.gz") and key.startswith("archive/20")
    body = boto3.client("s3", region_name="us-east-1").get_object(
        Bucket=aws["UNDERLAY_BUCKETS__AUDIT"], Key=key
    )
    archived = archive.read_archive(body["Body"].read())
    assert [e["seq"] for e in archived] == [1, 2, 3]
    assert archive.verify_entries(archived) == {"ok": True, "checked": 3, "genesis": True}
    # the table's remaining chain verifies from its oldest entry, and links to the archive's last one
    result = verify.verify()
    assert result["ok"] and result["from"] == 4 and result["checked"] == 2
    assert item(aws, 4)["prev_hash"]["S"] == archived[-1]["hash"]
    archived[1]["actor"] = "mallory"
    assert archive.verify_entries(archived)["first_broken"] == {"seq": 2, "reason": "modified"}


def test_a_failed_archive_is_grouped_reported_and_retried(
    aws: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    """S3 refusing the archive: the batch raises (Lambda retries it), after its error group and Sentry heard."""
    import uuid

    from underlay import sentry
    from underlay.admin import errors
    from underlay.settings import reset_settings

    from functions.audit_archive.app import handler

    write(1)
    image = item(aws, 1)
    clean_env.setenv("UNDERLAY_BUCKETS__AUDIT", "no-such-bucket")
    clean_env.setenv("UNDERLAY_REDIS__PREFIX", f"t{uuid.uuid4().hex[:8]}:")
    reset_settings()
    reported: list[BaseException] = []
    clean_env.setattr(sentry, "capture_exception", lambda exc, **tags: reported.append(exc))
    with pytest.raises(Exception, match="NoSuchBucket") as raised:
        handler({"Records": [_ttl_removal(image)]}, None)
    (group,), _, _ = errors.list_groups()
    assert group["source"] == "audit_archive" and group["count"] == 1 and "NoSuchBucket" in group["type"]
    assert reported == [raised.value]
