"""The configuration keys: every field of `Settings`, named `section.field` (or `field` at the top level).

One schema drives everything: the keys, their defaults, what may change at runtime and what is secret all come
from the pydantic models in `underlay.settings`. A key is:
- secret when its type is `SecretStr`: never returned, never logged, never stored in the config table;
- runtime-settable when its section is listed in `RUNTIME_SECTIONS` and it is not bound to the deployment
  (resource names, ARNs, key ids and the few fields in `DEPLOY_KEYS`, which CDK wires to infrastructure);
- otherwise read-only at runtime: set it in the stage config (or an environment variable) and deploy.
"""

from __future__ import annotations

import types
from functools import lru_cache
from typing import Any, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

# Sections an operator may tune through the config API. A new section is read-only until listed here.
RUNTIME_SECTIONS: frozenset[str] = frozenset(
    {
        "cache",
        "ratelimit",
        "flags",
        "health",
        "http",
        "observability",
        "audit",
        "jobs",
        "config",
        "breakers",
        "admin",
    }
)
# Fields of runtime sections that CDK binds to infrastructure (changing them at runtime would break it).
DEPLOY_KEYS: frozenset[str] = frozenset(
    {
        "observability.tracing_enabled",  # X-Ray permissions and the function's tracing mode
        "observability.metrics_namespace",  # the dashboard and alarms read this namespace
        "audit.digest_retention_days",  # S3 Object Lock retention is set on the bucket
        "jobs.scheduler_group",
        # Could lock the config API out of its own repair (a 1-byte body limit refuses every PUT).
        "http.max_body_bytes",
        # Health calls these URLs from inside the VPC: a config:write caller must not point it at internal hosts.
        "health.external_services",
        # Redis's breaker is built once and shared by the cache, the limiter and the admin hook.
        "cache.breaker_failures",
        "cache.breaker_cooldown_seconds",
    }
)
_DEPLOY_SUFFIXES = ("_arn", "_id")


class Key(NamedTuple):
    name: str  # "cache.default_ttl_seconds"
    path: tuple[str, ...]  # ("cache", "default_ttl_seconds")
    secret: bool
    runtime: bool  # settable through the config API
    description: str
    # A secret's reference field, when it has one: the Secrets Manager/SSM ARN that CDK sets instead of the value
    # (`http.cursor_secret` -> `http.cursor_secret_arn`, `observability.sentry_dsn` -> `..._secret_arn`).
    reference: tuple[str, ...] | None = None

    @property
    def why_read_only(self) -> str:
        if self.secret:
            return "secrets live in Secrets Manager or SSM SecureString, never in the config table"
        return "it is bound to the deployment; set it in the stage config and deploy"


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_secret(a) for a in get_args(annotation))
    return False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _runtime(path: tuple[str, ...], secret: bool) -> bool:
    name = ".".join(path)
    return (
        len(path) == 2
        and path[0] in RUNTIME_SECTIONS
        and not secret
        and name not in DEPLOY_KEYS
        and not path[1].endswith(_DEPLOY_SUFFIXES)
    )


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Key]:
    """Every key, in declaration order."""
    from underlay.settings import Settings

    keys: dict[str, Key] = {}
    for name, field in Settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is None:
            secret = _is_secret(field.annotation)
            keys[name] = Key(name, (name,), secret, False, field.description or "")
            continue
        for sub, subfield in model.model_fields.items():
            path = (name, sub)
            secret = _is_secret(subfield.annotation)
            sibling = next(
                (f"{sub}{s}" for s in ("_arn", "_secret_arn") if f"{sub}{s}" in model.model_fields), None
            )
            keys[f"{name}.{sub}"] = Key(
                f"{name}.{sub}",
                path,
                secret,
                _runtime(path, secret),
                subfield.description or "",
                (name, sibling) if secret and sibling else None,
            )
    return keys


def lookup(name: str) -> Key | None:
    return catalogue().get(name)


def value_at(document: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) of a key in a nested document."""
    node: Any = document
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def set_at(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set a key in a nested document, replacing the value there wholesale."""
    node = document
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value
