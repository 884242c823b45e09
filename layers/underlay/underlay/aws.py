"""boto3 clients, created on first use and reused across invocations, plus a botocore call counter.

Every Underlay client comes from `client(service)`: one session, tight timeouts for Lambda, standard
retries. `count_aws_calls()` counts the API calls those clients make (tests and `make bench` use it).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_session: Any = None
_calls: Counter[str] = Counter()


def _count_call(model: Any = None, **_: Any) -> None:
    # botocore `before-call` hook: one event per API call attempt made by our clients.
    name = f"{model.service_model.service_name}.{model.name}" if model is not None else "unknown"
    with _lock:
        _calls[name] += 1


def session() -> Any:
    global _session
    if _session is None:
        import boto3

        _session = boto3.session.Session()
        _session.events.register("before-call.*.*", _count_call)
    return _session


# botocore presigns S3 URLs and POST policies with SigV2 on the global endpoint unless told otherwise. SigV2 cannot
# read SSE-KMS objects (every Underlay bucket), and a bucket outside us-east-1 answers the global endpoint with a
# redirect: SigV4 and virtual-hosted addressing give regional URLs that work (path style still for moto's IP).
_SERVICE_CONFIG: dict[str, dict[str, Any]] = {
    "s3": {"signature_version": "s3v4", "s3": {"addressing_style": "virtual"}},
}


def client(service: str) -> Any:
    """A cached boto3 client. Endpoints come from the standard AWS_ENDPOINT_URL variables (moto locally)."""
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _clients:
            from botocore.config import Config

            config = Config(
                connect_timeout=1,
                read_timeout=2,
                retries={"mode": "standard", "max_attempts": 2},
                **_SERVICE_CONFIG.get(service, {}),
            )
            _clients[service] = session().client(service, config=config)
        return _clients[service]


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError (`ConditionalCheckFailedException`, ...); "" for anything else."""
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def reset_clients() -> None:
    """Forget cached clients (tests switching endpoints or credentials)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None


class AwsCallCount:
    """What `count_aws_calls()` yields: `total` and `by_operation` during the block, frozen when it ends."""

    def __init__(self) -> None:
        self._start = Counter(_calls)
        self._end: Counter[str] | None = None

    def stop(self) -> None:
        with _lock:
            self._end = Counter(_calls)

    @property
    def by_operation(self) -> dict[str, int]:
        with _lock:
            diff = Counter(_calls if self._end is None else self._end)
        diff.subtract(self._start)
        return {k: v for k, v in diff.items() if v > 0}

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())


@contextmanager
def count_aws_calls() -> Iterator[AwsCallCount]:
    """Count AWS API calls made through `underlay.aws` clients inside the block (and only there)."""
    count = AwsCallCount()
    try:
        yield count
    finally:
        count.stop()
