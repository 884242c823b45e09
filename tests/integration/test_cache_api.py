"""The cache API through the real handler, moto for the event bus, and real redis-servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import redis
from moto import mock_aws
from underlay.cache import get_cache, keys, warming

from tests.conftest import http_event, load_event


@pytest.fixture
def env(clean_env: pytest.MonkeyPatch, redis_url: str) -> Iterator[pytest.MonkeyPatch]:
    with mock_aws():
        clean_env.setenv("UNDERLAY_REDIS__URL", redis_url)
        clean_env.setenv("UNDERLAY_RATELIMIT__ENABLED", "false")  # these tests are about the cache
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        yield clean_env
        client.flushdb()


def call(
    method: str, path: str, *, scopes: str = "cache:admin", body: Any = None
) -> tuple[int, dict[str, Any]]:
    from functions.cache.app import handler

    result = handler(http_event(method, path, scopes=scopes, sub="ops", body=body), None)
    return result["statusCode"], json.loads(result["body"])


@pytest.mark.usefixtures("env")
def test_delete_key_pattern_and_tag_say_what_they_did() -> None:
    cache = get_cache()
    for i in range(3):
        cache.set(keys.MOVIE_DETAIL.build(id=i), i, tags=["movies"])
    cache.set(keys.AUTOCOMPLETE.build(q="star wars"), ["a"])
    cache.set(keys.HOME_BANNERS.build(), ["b"])

    status, body = call("DELETE", "/v1/cache/keys/home:banners")
    assert (status, body) == (200, {"key": "home:banners", "deleted": 1})
    status, body = call("DELETE", "/v1/cache/keys/home:banners")
    assert (status, body) == (200, {"key": "home:banners", "deleted": 0})
    escaped = keys.AUTOCOMPLETE.build(q="star wars").key  # search:autocomplete:star%20wars
    status, body = call("DELETE", f"/v1/cache/keys/{quote(escaped, safe=':')}")
    assert (status, body["deleted"]) == (200, 1)
    status, body = call("DELETE", "/v1/cache/tags/movies")
    assert (status, body) == (200, {"tag": "movies", "deleted": 3})

    cache.set(keys.MOVIE_DETAIL.build(id=9), 9)
    status, body = call("DELETE", "/v1/cache/pattern/movie:*")
    assert (status, body) == (200, {"pattern": "movie:*", "deleted": 1})


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("pattern", ["*", "%2A", "%3Fx", "%5Bab%5D*"])
def test_a_bare_wildcard_pattern_is_422_and_deletes_nothing(pattern: str) -> None:
    get_cache().set("keep", 1)
    status, body = call("DELETE", f"/v1/cache/pattern/{pattern}")
    assert status == 422 and body["code"] == "VALIDATION_FAILED"
    assert body["errors"][0]["field"] == "pattern"
    assert get_cache().get("keep") == 1


@pytest.mark.usefixtures("env")
def test_scope_is_required() -> None:
    status, body = call("DELETE", "/v1/cache/tags/movies", scopes="flags:read")
    assert status == 403 and body["code"] == "INSUFFICIENT_SCOPE"


@pytest.mark.usefixtures("env")
def test_stats_reports_ratio_memory_and_top_keys() -> None:
    cache = get_cache()
    key = keys.MOVIE_DETAIL.build(id=1)
    cache.get(key)
    cache.set(key, "x" * 5000)
    cache.get(key)
    status, body = call("GET", "/v1/cache/stats")
    assert status == 200
    assert body["by_type"]["detail"] == {"hits": 1, "misses": 1, "hit_ratio": 0.5}
    assert body["memory"]["used_bytes"] > 0
    assert body["top_keys"][0] == {"key": "movie:detail:1", "bytes": body["top_keys"][0]["bytes"]}
    assert body["top_keys"][0]["bytes"] > 5000


@pytest.mark.usefixtures("env")
def test_warm_runs_the_registered_warmers(monkeypatch: pytest.MonkeyPatch) -> None:
    def banners(cache: Any) -> int:
        cache.set(keys.HOME_BANNERS.build(), ["spring sale"])
        return 1

    def broken(cache: Any) -> int:
        raise RuntimeError("catalogue down")

    monkeypatch.setattr(warming, "WARMERS", {"banners": banners, "broken": broken})
    status, body = call("POST", "/v1/cache/warm", body={})
    assert status == 200 and body["keys"] == 1 and body["failed"] == 1
    assert {w["name"]: w["status"] for w in body["warmers"]} == {"banners": "succeeded", "broken": "failed"}
    assert get_cache().get(keys.HOME_BANNERS.build()) == ["spring sale"]

    status, body = call("POST", "/v1/cache/warm", body={"warmers": ["nope"]})
    assert status == 422 and body["errors"][0]["field"] == "warmers"


def _bus_queue(env: pytest.MonkeyPatch) -> tuple[Any, str]:
    """An event bus whose cache events land in an SQS queue the test reads."""
    events = boto3.client("events", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    events.create_event_bus(Name="bus")
    queue = sqs.create_queue(QueueName="events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="cache", EventBusName="bus", EventPattern=json.dumps({"source": ["underlay.cache"]}))
    events.put_targets(Rule="cache", EventBusName="bus", Targets=[{"Id": "q", "Arn": arn}])
    env.setenv("UNDERLAY_EVENT_BUS", "bus")
    from underlay.settings import reset_settings

    reset_settings()
    return sqs, queue


def test_invalidations_emit_cache_invalidated(env: pytest.MonkeyPatch) -> None:
    env.setenv("UNDERLAY_CACHE__ENTRY_ADDED_SAMPLE_RATE", "0")
    sqs, queue = _bus_queue(env)
    get_cache().set("a", 1, tags=["t"])
    assert call("DELETE", "/v1/cache/tags/t")[0] == 200
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    details = [json.loads(m["Body"]) for m in messages]
    assert [d["detail-type"] for d in details] == ["CacheInvalidated"]
    assert details[0]["detail"]["kind"] == "tag" and details[0]["detail"]["deleted"] == 1
    assert details[0]["detail"]["correlation_id"]


def test_entry_added_is_sampled(env: pytest.MonkeyPatch) -> None:
    env.setenv("UNDERLAY_CACHE__ENTRY_ADDED_SAMPLE_RATE", "0.5")
    sqs, queue = _bus_queue(env)
    for i in range(200):
        get_cache().set(f"k{i}", i)
    seen = 0
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        seen += len(batch)
        sqs.delete_message_batch(
            QueueUrl=queue,
            Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in batch],
        )
    assert 50 < seen < 150  # about half of 200 writes; one event per write would be 200


def test_redis_stopped_mid_test_degrades_and_health_warns(clean_env: pytest.MonkeyPatch) -> None:
    """A request never fails because the cache failed: reads compute, the breaker opens, health says warn."""
    from infra.local.stack import RedisProcess

    server = RedisProcess()
    url = server.start()
    try:
        with mock_aws():
            clean_env.setenv("UNDERLAY_REDIS__URL", url)
            clean_env.setenv("UNDERLAY_HEALTH__CACHE_SECONDS", "0")
            clean_env.setenv("UNDERLAY_CACHE__BREAKER_COOLDOWN_SECONDS", "60")
            cache = get_cache()
            assert cache.get_or_compute("k", lambda: "from redis") == "from redis"
            assert cache.get_or_compute("k", lambda: "recomputed") == "from redis"

            server.stop()

            for _ in range(5):
                assert cache.get_or_compute("k", lambda: "recomputed") == "recomputed"
                assert cache.set("k2", 1) is False
            assert cache.breaker.state == "open" and cache.fallbacks >= 5

            from functions.health.app import handler

            event = load_event("http/health_details")
            event["requestContext"]["authorizer"] = {"lambda": {"sub": "ops", "scopes": "platform:read"}}
            event["routeKey"] = "GET /v1/health/cache"
            event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/health/cache"
            result = handler(event, None)
            body = json.loads(result["body"])
            assert result["statusCode"] == 200 and body["status"] == "warn"  # degraded, not down
            assert body["checks"]["redis:circuit"][0]["status"] == "warn"
            assert body["checks"]["redis:status"][0]["status"] == "fail"

            status, problem = call("GET", "/v1/cache/stats")
            assert status == 503 and problem["code"] == "DEPENDENCY_UNAVAILABLE"
            assert "Traceback" not in json.dumps(problem)
    finally:
        server.stop()
