"""Feature flags through the real API handler, on moto and the session's real Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from underlay import flags
from underlay.flags import service, store

from tests.conftest import http_event

WRITE = "flags:read flags:write flags:evaluate"


@pytest.fixture
def env(aws: dict[str, str], clean_env: pytest.MonkeyPatch, redis_url: str) -> dict[str, str]:
    redis.Redis.from_url(redis_url).flushdb()
    clean_env.setenv("UNDERLAY_RATELIMIT__ENABLED", "false")
    clean_env.setenv("UNDERLAY_FLAGS__REFRESH_SECONDS", "0")
    return aws


def call(
    method: str, path: str, *, scopes: str = WRITE, body: Any = None, sub: str = "pm"
) -> tuple[int, Any]:
    from functions.flags.app import handler

    result = handler(http_event(method, path, scopes=scopes, sub=sub, body=body), None)
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else None


def checkout(**overrides: Any) -> dict[str, Any]:
    return {
        "key": "new-checkout",
        "type": "boolean",
        "enabled": True,
        "default": False,
        "description": "The new checkout",
        "tags": ["payments"],
        "rules": [
            {
                "conditions": [{"attribute": "country", "operator": "in", "value": ["DE", "FR"]}],
                "serve": {"variant": "true"},
            }
        ],
        **overrides,
    }


def test_create_get_duplicate_and_bad_rules(env: dict[str, str]) -> None:
    status, flag = call("POST", "/v1/feature-flags", body=checkout())
    assert status == 201 and flag["version"] == 1 and flag["state"] == "enabled" and "salt" not in flag
    assert flag["created_by"] == "pm" and flag["variants"] == {"true": True, "false": False}
    assert call("GET", "/v1/feature-flags/new-checkout")[1]["key"] == "new-checkout"
    status, problem = call("POST", "/v1/feature-flags", body=checkout())
    assert status == 409 and problem["code"] == "CONFLICT"
    status, problem = call(
        "POST",
        "/v1/feature-flags",
        body=checkout(key="x", rules=[{"conditions": [], "serve": {"variant": "maybe"}}]),
    )
    assert status == 422 and problem["errors"][0]["field"].startswith("rules.0")
    status, problem = call(
        "POST",
        "/v1/feature-flags",
        body=checkout(
            key="y",
            rules=[
                {
                    "conditions": [{"attribute": "country", "operator": "eq", "value": "DE"}],
                    "serve": {"variant": "maybe"},
                }
            ],
        ),
    )
    assert status == 422 and problem["errors"][0]["field"] == "rules.0.serve.variant"
    status, problem = call("POST", "/v1/feature-flags", body=checkout(key="Bad Key"))
    assert status == 422 and problem["errors"][0]["field"] == "key"
    assert call("GET", "/v1/feature-flags/nope")[0] == 404


def test_updates_use_the_version_and_are_audited(env: dict[str, str]) -> None:
    call("POST", "/v1/feature-flags", body=checkout())
    status, updated = call(
        "PUT", "/v1/feature-flags/new-checkout", body={**checkout(rollout={"percentage": 25}), "version": 1}
    )
    assert status == 200 and updated["version"] == 2 and updated["rollout"]["percentage"] == 25
    status, problem = call("PUT", "/v1/feature-flags/new-checkout", body={**checkout(), "version": 1})
    assert status == 409 and "version 2" in problem["detail"]
    status, toggled = call("POST", "/v1/feature-flags/new-checkout/toggle")
    assert toggled["enabled"] is False and toggled["version"] == 3
    from underlay.audit.query import Filters, list_entries

    entries, _ = list_entries(Filters(entity_type="flag", entity_id="new-checkout"))
    assert [e["action"] for e in entries] == ["flags.toggle", "flags.update", "flags.create"]
    assert entries[1]["before"]["rollout"] is None and entries[1]["after"]["rollout"]["percentage"] == 25


def test_prerequisites_must_exist_and_not_cycle(env: dict[str, str]) -> None:
    call("POST", "/v1/feature-flags", body=checkout(key="a"))
    status, problem = call(
        "POST", "/v1/feature-flags", body=checkout(key="b", prerequisites=[{"key": "zzz", "variant": "true"}])
    )
    assert status == 422 and problem["errors"][0]["field"] == "prerequisites.0.key"
    assert (
        call(
            "POST",
            "/v1/feature-flags",
            body=checkout(key="b", prerequisites=[{"key": "a", "variant": "true"}]),
        )[0]
        == 201
    )
    status, problem = call(
        "PUT",
        "/v1/feature-flags/a",
        body={**checkout(key="a", prerequisites=[{"key": "b", "variant": "true"}]), "version": 1},
    )
    assert (
        status == 422
        and problem["errors"][0]["field"] == "prerequisites"
        and "a" in problem["errors"][0]["message"]
    )


def test_list_filters_and_pages(env: dict[str, str]) -> None:
    for i in range(5):
        call("POST", "/v1/feature-flags", body=checkout(key=f"f{i}", tags=["odd"] if i % 2 else ["even"]))
    call("DELETE", "/v1/feature-flags/f4")
    call("POST", "/v1/feature-flags/f3/toggle")
    assert [f["key"] for f in call("GET", "/v1/feature-flags?tag=odd")[1]["flags"]] == ["f1", "f3"]
    assert [f["key"] for f in call("GET", "/v1/feature-flags?state=archived")[1]["flags"]] == ["f4"]
    assert [f["key"] for f in call("GET", "/v1/feature-flags?state=disabled")[1]["flags"]] == ["f3"]
    first = call("GET", "/v1/feature-flags?limit=2")[1]
    second = call("GET", f"/v1/feature-flags?limit=2&cursor={first['next_cursor']}")[1]
    assert [f["key"] for f in first["flags"] + second["flags"]] == ["f0", "f1", "f2", "f3"]


def test_evaluate_merges_claims_and_skips_archived(env: dict[str, str]) -> None:
    call("POST", "/v1/feature-flags", body=checkout())
    call("POST", "/v1/feature-flags", body=checkout(key="old", rules=[]))
    call("DELETE", "/v1/feature-flags/old")
    status, result = call(
        "POST",
        "/v1/feature-flags/evaluate",
        scopes="flags:evaluate",
        body={"context": {"country": "DE", "sub": "spoofed"}},
        sub="alice",
    )
    assert status == 200
    by_key = {f["key"]: f for f in result["flags"]}
    assert set(by_key) == {"new-checkout"}  # archived flags are not served
    assert by_key["new-checkout"] == {
        "key": "new-checkout",
        "value": True,
        "variant": "true",
        "reason": "RULE_MATCH",
    }
    status, result = call(
        "POST", "/v1/feature-flags/evaluate", scopes="flags:evaluate", body={"context": {"country": "US"}}
    )
    assert result["flags"][0]["value"] is False and result["flags"][0]["reason"] == "DEFAULT"
    assert call("POST", "/v1/feature-flags/evaluate", scopes="flags:read", body={})[0] == 403
    call("POST", "/v1/feature-flags/old/restore")
    assert {f["key"] for f in call("POST", "/v1/feature-flags/evaluate", body={})[1]["flags"]} == {
        "new-checkout",
        "old",
    }


def test_segments(env: dict[str, str]) -> None:
    segment = {
        "key": "beta-testers",
        "conditions": [{"attribute": "email", "operator": "ends_with", "value": "@example.com"}],
    }
    status, created = call("POST", "/v1/segments", body=segment)
    assert status == 201 and created["version"] == 1
    assert call("POST", "/v1/segments", body=segment)[0] == 409
    flag = checkout(rules=[{"segment": "beta-testers", "serve": {"variant": "true"}}])
    assert call("POST", "/v1/feature-flags", body=flag)[0] == 201
    status, result = call(
        "POST", "/v1/feature-flags/evaluate", body={"context": {"email": "ann@example.com"}}
    )
    assert result["flags"][0]["value"] is True
    assert call("DELETE", "/v1/segments/beta-testers")[0] == 409  # in use
    assert call("PUT", "/v1/segments/beta-testers", body={**segment, "version": 1})[1]["version"] == 2
    assert call("GET", "/v1/segments")[1]["segments"][0]["key"] == "beta-testers"
    unknown = checkout(key="z", rules=[{"segment": "nobody", "serve": {"variant": "true"}}])
    assert call("POST", "/v1/feature-flags", body=unknown)[1]["errors"][0]["field"] == "rules.0.segment"


def test_the_last_good_snapshot_survives_a_store_outage(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    call("POST", "/v1/feature-flags", body=checkout())
    client = flags.FlagClient()
    assert client.evaluate("new-checkout", {"country": "DE"}).value is True

    def down(*_: Any, **__: Any) -> Any:
        raise ConnectionError("DynamoDB is unreachable")

    monkeypatch.setattr(store, "load_all", down)
    monkeypatch.setattr(store, "read_stamp_from_table", down)
    client.refresh(force=True)
    assert client.evaluate("new-checkout", {"country": "DE"}).value is True  # still served
    fresh = flags.FlagClient()
    cold = fresh.evaluate("new-checkout", {"country": "DE"}, default="code default")
    assert (cold.value, cold.reason) == ("code default", "ERROR")


def test_warm_evaluation_makes_no_aws_call(env: dict[str, str], clean_env: pytest.MonkeyPatch) -> None:
    from underlay.aws import count_aws_calls
    from underlay.settings import reset_settings

    call("POST", "/v1/feature-flags", body=checkout())
    clean_env.setenv("UNDERLAY_FLAGS__REFRESH_SECONDS", "60")
    reset_settings()
    client = flags.FlagClient()
    client.evaluate("new-checkout", {})
    with count_aws_calls() as calls:
        for _ in range(100):
            client.evaluate("new-checkout", {"country": "FR"})
    assert calls.total == 0


def test_analytics_are_flushed_in_one_call(env: dict[str, str]) -> None:
    call("POST", "/v1/feature-flags", body=checkout())
    client = flags.client()
    for user in ("u1", "u2", "u3", "u1"):
        client.evaluate("new-checkout", {"sub": user, "country": "DE"})
    assert client.flush_analytics() == 4
    status, stats = call("GET", "/v1/feature-flags/new-checkout/analytics?days=1")
    assert status == 200 and stats["days"][0]["evaluations"] == 4 and stats["days"][0]["unique_users"] == 3
    assert stats["days"][0]["variants"] == {"true": 4} and stats["last_evaluated_at"]


def test_the_stale_scan(env: dict[str, str]) -> None:
    call("POST", "/v1/feature-flags", body=checkout())
    call("POST", "/v1/feature-flags", body=checkout(key="kept", kind="permanent"))
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat(timespec="milliseconds")
    for key in ("new-checkout", "kept"):
        flag = store.get(key)
        aged = flag.model_copy(update={"created_at": old, "updated_at": old})
        store._ddb().put_item(TableName=store.table(), Item=store.flag_item(aged))

    class Ctx:
        job_id, attempt = "scan", 1

        def progress(self, percent: int, message: str = "") -> None: ...

        def cancelled(self) -> bool:
            return False

    flags.client().evaluate("kept", {})
    flags.client().flush_analytics()
    result = service.stale_scan(service.StaleScanPayload(), Ctx())
    assert result["potentially_stale"] == ["new-checkout"]
    stale = call("GET", "/v1/feature-flags?stale=true")[1]["flags"]
    assert [f["key"] for f in stale] == ["new-checkout"]
    assert "temporary and unchanged for 30 days" in stale[0]["stale_reasons"]
    assert "not evaluated for 30 days" in stale[0]["stale_reasons"]
