"""The Redis connection: created on first use, reused across invocations, with Lambda-tight timeouts.

Locally `UNDERLAY_REDIS__URL` points at a redis-server (or the dev stack's). On AWS the client connects to the
ElastiCache endpoint over TLS, with the auth token read once from Secrets Manager.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from underlay.settings import get_settings

if TYPE_CHECKING:
    import redis

_lock = threading.Lock()
_client: redis.Redis | None = None


def _auth_token(secret_arn: str) -> str:
    import json

    from underlay.aws import client

    raw = client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    # CDK-generated secrets are JSON ({"token": ...}); a plain string works too.
    try:
        value = json.loads(raw)
    except ValueError:
        return str(raw)
    return str(value.get("token") or value.get("password") or raw) if isinstance(value, dict) else str(raw)


def get_redis() -> redis.Redis:
    """The process-wide client. Raises `RuntimeError` when Redis is not configured."""
    global _client
    if _client is not None:
        return _client
    with _lock:
        if _client is None:
            import redis

            cfg = get_settings().redis
            common = {
                "socket_timeout": cfg.socket_timeout_seconds,
                "socket_connect_timeout": cfg.connect_timeout_seconds,
                "health_check_interval": 30,
                "retry_on_timeout": False,
            }
            if cfg.url is not None:
                _client = redis.Redis.from_url(cfg.url.get_secret_value(), **common)  # type: ignore[arg-type]
            elif cfg.host:
                password = _auth_token(cfg.auth_secret_arn) if cfg.auth_secret_arn else None
                _client = redis.Redis(
                    host=cfg.host,
                    port=cfg.port,
                    ssl=cfg.tls,
                    password=password,
                    **common,  # type: ignore[arg-type]
                )
            else:
                raise RuntimeError(
                    "Redis is not configured (set UNDERLAY_REDIS__URL or UNDERLAY_REDIS__HOST)"
                )
        return _client


def reset_redis() -> None:
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


def key(*parts: str) -> str:
    """A namespaced key: every key starts with the configured prefix."""
    return get_settings().redis.prefix + ":".join(parts)
