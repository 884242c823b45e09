"""Shared set-ups for benchmarks (no benchmarks of its own)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def patched_env(updates: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (process caches reset on the way in and out)."""
    from infra.local.stack import _reset_process_caches

    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    _reset_process_caches()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reset_process_caches()


@contextmanager
def moto_stack() -> Iterator[dict[str, str]]:
    from infra.local.stack import AwsService

    aws = AwsService()
    aws.start()
    env = {
        **aws.names,
        "AWS_ENDPOINT_URL": aws.endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    try:
        with patched_env(env):
            yield aws.names
    finally:
        aws.stop()
