"""The local stack behind `make dev`: one process with embedded AWS (moto server), Redis, a JWT issuer, the real
authorizer and the real handlers behind an HTTP server that speaks like API Gateway.

Every table, bucket, queue and the event bus come from `underlay.declaration`. Later domains add event sources
(SQS workers, schedules, EventBridge rules) by passing objects with `start(stack)`/`stop()` in `event_sources`,
or by registering a factory with `register_event_source`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from underlay import declaration

from infra.local.gateway import FunctionRunner, LocalGateway, Reply, Request
from infra.local.issuer import LocalIssuer

REGION = "us-east-1"
RESOURCE_PREFIX = "underlay-local"
STORAGE_BUCKET = "storage"  # underlay.storage.client.BUCKET


class EventSource(Protocol):
    """Something that feeds events to handlers while the stack runs (an SQS poller, a scheduler, ...)."""

    def start(self, stack: LocalStack) -> None: ...

    def stop(self) -> None: ...


_source_factories: list[Callable[[], EventSource]] = []


def register_event_source(factory: Callable[[], EventSource]) -> None:
    """Add an event source to every local stack started after this call."""
    _source_factories.append(factory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisProcess:
    """A `redis-server` on a free loopback port, in a temporary directory, with no persistence.

    The one way the local stack, the tests and the benchmarks start Redis: `with RedisProcess() as url: ...`.
    """

    def __init__(self, *extra_args: str) -> None:
        self.extra_args = extra_args
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.port, self._dir = free_port(), tempfile.mkdtemp(prefix="underlay-redis-")
        self._process = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._dir),
                *("--save", "", "--appendonly", "no", *self.extra_args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class RedisService:
    """Redis as SPEC.md orders the choice: REDIS_URL, else a redis-server on PATH, else in-process fakeredis."""

    def __init__(self) -> None:
        self.url = ""
        self.kind = ""
        self._process: RedisProcess | None = None
        self._fake: Any = None

    def start(self) -> None:
        if os.environ.get("REDIS_URL"):
            self.url, self.kind = os.environ["REDIS_URL"], "REDIS_URL"
            return
        binary = shutil.which("redis-server")
        if binary:
            self._process = RedisProcess("--maxmemory", "256mb")
            self.url = self._process.start()
            self.kind = f"redis-server ({binary})"
        else:
            from fakeredis import TcpFakeServer

            port = free_port()
            self._fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
            threading.Thread(target=self._fake.serve_forever, daemon=True, name="fakeredis").start()
            self.kind = "fakeredis (in-process; install redis-server for the real thing)"
            self.url = f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._fake is not None:
            self._fake.shutdown()
            self._fake.server_close()
            self._fake = None


def _moto_server(port: int) -> Any:
    """An in-process moto server on 127.0.0.1:port (imported on first use: moto is heavy)."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class SerializedMotoServer(ThreadedMotoServer):
        """moto server answering one request at a time. AWS applies each request atomically, but moto's backends
        are not thread-safe (a DynamoDB transaction deep-copies tables that another request is changing), so
        concurrent callers (the gateway's threads, racing audit writers) would otherwise see spurious 500s."""

        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            lock = threading.Lock()

            def one_at_a_time(environ: Any, start_response: Any) -> Any:
                with lock:
                    return list(app(environ, start_response))

            self._server = make_server(
                self._ip_address, self._port, one_at_a_time, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerializedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)


class AwsService:
    """moto server in this process, with every declared resource created."""

    def __init__(self) -> None:
        self.endpoint = ""
        self._server: Any = None
        self.names: dict[str, str] = {}  # env var -> physical name / URL

    def start(self) -> None:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines drown the app's own
        port = free_port()
        self._server = _moto_server(port)
        self._server.start()
        _wait_for_port(port)
        self.endpoint = f"http://127.0.0.1:{port}"
        # moto's backends live in the process, not the server: start from nothing if a stack ran here before.
        import urllib.request

        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()
        self._create_resources()

    def _client(self, service: str) -> Any:
        import boto3

        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 (moto accepts anything)
        )

    def _create_resources(self) -> None:
        self.names.update(create_declared_resources(self._client, RESOURCE_PREFIX))

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def create_declared_resources(client: Callable[[str], Any], prefix: str) -> dict[str, str]:
    """Create every declared table (with GSIs and TTL), bucket, queue (with DLQ), the bus and the audit signing
    key through `client(service)` (moto server or `mock_aws`), and return the environment that names them."""
    names: dict[str, str] = {}
    ddb, s3, sqs, events, kms = (client(s) for s in ("dynamodb", "s3", "sqs", "events", "kms"))
    for table in declaration.TABLES:
        name = f"{prefix}-{table.name.replace('_', '-')}"
        keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
        attributes = {k for k, _ in keys}
        indexes = []
        for index in table.indexes:
            idx_keys = [(index.partition_key, "HASH")]
            if index.sort_key:
                idx_keys.append((index.sort_key, "RANGE"))
            attributes.update(k for k, _ in idx_keys)
            indexes.append(
                {
                    "IndexName": index.name,
                    "KeySchema": [{"AttributeName": k, "KeyType": t} for k, t in idx_keys],
                    "Projection": {"ProjectionType": "ALL"},
                }
            )
        kwargs: dict[str, Any] = {
            "TableName": name,
            "KeySchema": [{"AttributeName": k, "KeyType": t} for k, t in keys],
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if indexes:
            kwargs["GlobalSecondaryIndexes"] = indexes
        ddb.create_table(**kwargs)
        if table.ttl_attribute:
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
        names[declaration.env_name("table", table.name)] = name
    for bucket in declaration.BUCKETS:
        name = f"{prefix}-{bucket.name}"
        s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=bucket.object_lock)
        if bucket.versioned and not bucket.object_lock:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if bucket.name == STORAGE_BUCKET:
            _serve_public_objects(s3, name)
        names[declaration.env_name("bucket", bucket.name)] = name
    for queue in declaration.QUEUES:
        dlq_url = sqs.create_queue(QueueName=f"{prefix}-{queue.dlq_name}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        url = sqs.create_queue(
            QueueName=f"{prefix}-{queue.name}",
            Attributes={
                "VisibilityTimeout": str(queue.visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receive_count)}
                ),
            },
        )["QueueUrl"]
        names[declaration.env_name("queue", queue.name)] = url
        names[declaration.env_name("queue", queue.dlq_name)] = dlq_url
    bus = f"{prefix}-{declaration.EVENT_BUS}"
    events.create_event_bus(Name=bus)
    names["UNDERLAY_EVENT_BUS"] = bus
    from underlay.subscriptions import SUBSCRIPTIONS

    for subscription in SUBSCRIPTIONS:  # rule -> queue, as CDK deploys it; moto delivers matching events
        url = names[declaration.env_name("queue", subscription.queue_name)]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(
            Name=subscription.queue_name, EventBusName=bus, EventPattern=json.dumps(subscription.pattern)
        )
        events.put_targets(
            Rule=subscription.queue_name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}]
        )

    signing = kms.create_key(
        KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256", Description=f"{prefix}: audit digest signing"
    )
    names["UNDERLAY_AUDIT__SIGNING_KEY_ID"] = signing["KeyMetadata"]["KeyId"]
    return names


def _serve_public_objects(s3: Any, bucket: str) -> None:
    """The CDN's stand-in: anyone may GET the storage bucket's `public/` keys from the endpoint, as CloudFront
    serves them on AWS, and nothing else; `cdn_url` without a CDN base points there (underlay.storage)."""
    from underlay.storage.settings import PUBLIC_PREFIX

    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/{PUBLIC_PREFIX}/*",
    }
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    )


class _Handler(BaseHTTPRequestHandler):
    gateway: LocalGateway
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
        reply: Reply = self.gateway.handle(request)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the handlers' own access log line is the record of each request


class LocalStack:
    def __init__(
        self, *, port: int = 3000, serve_http: bool = True, event_sources: list[EventSource] | None = None
    ):
        self.port = port or free_port()
        self.serve_http = serve_http
        self.redis = RedisService()
        self.aws = AwsService()
        self.issuer = LocalIssuer()
        self.runner = FunctionRunner()
        if event_sources is None:  # SQS job workers and the scheduler, as on AWS
            from infra.local.workers import default_sources

            event_sources = default_sources()
        self.event_sources: list[EventSource] = list(event_sources) + [f() for f in _source_factories]
        self._httpd: ThreadingHTTPServer | None = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What the handlers see: the same variables CDK sets on AWS, pointed at the embedded services."""
        from underlay.settings import STAGE_SETTINGS_ENV

        from infra.stage_config import load_stage_config, stage_file

        stage = os.environ.get("UNDERLAY_STAGE", "dev")
        env = {
            STAGE_SETTINGS_ENV: load_stage_config(stage_file(stage)).settings_json(),
            "AWS_ENDPOINT_URL": self.aws.endpoint,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "UNDERLAY_STAGE": stage,
            "UNDERLAY_REDIS__URL": self.redis.url,
            "UNDERLAY_AUTH__ISSUER": self.issuer.issuer,
            "UNDERLAY_AUTH__AUDIENCE": self.issuer.audience,
            "UNDERLAY_AUTH__JWKS_URL": f"{self.url}/.well-known/jwks.json",
            "POWERTOOLS_METRICS_DISABLED": os.environ.get("POWERTOOLS_METRICS_DISABLED", "true"),
        }
        env.update(self.aws.names)
        return env

    def start(self) -> None:
        self.redis.start()
        self.aws.start()
        for name, value in self.environment().items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _reset_process_caches()
        if self.serve_http:
            from underlay.settings import get_settings

            gateway = LocalGateway(self.runner, cors_origins=get_settings().http.cors_origins)
            gateway.extra_routes["/.well-known/jwks.json"] = lambda _: Reply(
                200, {"Content-Type": "application/json"}, json.dumps(self.issuer.jwks()).encode()
            )
            handler = type("Handler", (_Handler,), {"gateway": gateway})
            self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
            self._httpd.daemon_threads = True
            threading.Thread(target=self._httpd.serve_forever, daemon=True, name="gateway").start()
        for source in self.event_sources:
            source.start(self)

    def stop(self) -> None:
        for source in reversed(self.event_sources):
            source.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.aws.stop()
        self.redis.stop()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        _reset_process_caches()

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _reset_process_caches() -> None:
    from underlay.audit import reset_audit
    from underlay.auth import reset_verifier
    from underlay.aws import reset_clients
    from underlay.cache import reset_cache
    from underlay.config.secrets import reset_secrets
    from underlay.flags import reset_flags
    from underlay.health import clear_cache
    from underlay.observability import reset_observability
    from underlay.pagination import reset_key
    from underlay.ratelimit import reset_ratelimit
    from underlay.redis_client import reset_redis
    from underlay.settings import reset_settings

    reset_settings()
    reset_secrets()
    reset_key()
    reset_clients()
    reset_redis()
    reset_cache()
    reset_audit()
    reset_flags()
    reset_ratelimit()
    reset_verifier()
    reset_observability()
    clear_cache()


def serve(port: int) -> int:
    """`underlay dev`: start, print `ready URL`, and run until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack = LocalStack(port=port)
    try:
        stack.start()
    except OSError as exc:
        print(f"underlay dev: cannot start: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    print(f"redis: {stack.redis.kind}", flush=True)
    print(f"aws: moto server at {stack.aws.endpoint} ({len(stack.aws.names)} resources)", flush=True)
    print(
        f"issuer: {stack.issuer.issuer} (key {Path(stack.issuer.key_file)}); mint tokens with `make token`",
        flush=True,
    )
    print(f"ready {stack.url}", flush=True)
    try:
        stop.wait()
    finally:
        stack.stop()
        print("stopped", flush=True)
    return 0
