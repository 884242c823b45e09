"""Secret values: from Secrets Manager or SSM SecureString (KMS), through Powertools Parameters with caching.

Secrets never come from the config table or files. Each secret setting is a pair: a `SecretStr` field for local
work (`UNDERLAY_HTTP__CURSOR_SECRET`) and a `<name>_arn` field that CDK sets to a Secrets Manager secret ARN or an
SSM parameter ARN/name. The value is cached for `config.secret_cache_seconds`, so a rotated secret is picked up
without a redeploy, and returned as a plain string only to the caller that needs it; it is never logged.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic import SecretStr


@lru_cache(maxsize=2)
def _provider(kind: str) -> Any:
    from aws_lambda_powertools.utilities import parameters
    from underlay.aws import client

    if kind == "ssm":
        return parameters.SSMProvider(boto3_client=client("ssm"))
    return parameters.SecretsProvider(boto3_client=client("secretsmanager"))


def _is_ssm(reference: str) -> bool:
    return reference.startswith(("arn:aws:ssm:", "/")) or ":parameter/" in reference


def fetch(reference: str, *, field: str | None = None) -> str:
    """The value of a Secrets Manager secret (ARN or name) or an SSM SecureString parameter (ARN or `/name`).

    A JSON object secret (CDK's generated secrets) yields `field` if given, else its `token`, `password` or
    `value` member.
    """
    from underlay.settings import get_settings

    max_age = get_settings().config.secret_cache_seconds
    if _is_ssm(reference):
        name = reference.split(":parameter", 1)[1] if reference.startswith("arn:") else reference
        raw = _provider("ssm").get(name, decrypt=True, max_age=max_age)
    else:
        raw = _provider("secretsmanager").get(reference, max_age=max_age)
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if not isinstance(document, dict):
        return text
    for member in (field, "token", "password", "value"):
        if member and member in document:
            return str(document[member])
    return text


def resolve(value: SecretStr | None, reference: str | None) -> str | None:
    """A secret setting: the local `SecretStr` if set, else the referenced secret, else None."""
    if value is not None:
        return value.get_secret_value()
    if reference:
        return fetch(reference)
    return None


def reset_secrets() -> None:
    """Drop the providers and their caches (tests, the local stack)."""
    for kind in ("ssm", "secretsmanager"):
        if _provider.cache_info().currsize:
            _provider(kind).clear_cache()
    _provider.cache_clear()
