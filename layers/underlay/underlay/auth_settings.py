"""Authorizer settings: a validated stdlib dataclass, so the authorizer's cold start never imports pydantic.

`Settings.auth` (pydantic) embeds this same class, so there is one schema: pydantic validates it with every other
setting, and the authorizer loads it alone with `AuthSettings.from_env()`. Both run `__post_init__`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Literal

ALLOWED_ALGORITHMS = ("RS256", "ES256")


@dataclass(frozen=True)
class AuthSettings:
    issuer: str = "https://issuer.underlay.local"
    audience: str = "underlay"
    jwks_url: str = "http://127.0.0.1:3000/.well-known/jwks.json"
    algorithms: list[Literal["RS256", "ES256"]] = field(default_factory=lambda: ["RS256", "ES256"])
    leeway_seconds: int = 30
    tier_claim: str = "tier"
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    jwks_cache_seconds: int = 300
    jwks_refresh_interval_seconds: int = 60  # at most one refresh per interval on an unknown kid
    jwks_timeout_seconds: float = 2.0

    def __post_init__(self) -> None:
        problems = []
        if not self.algorithms or any(a not in ALLOWED_ALGORITHMS for a in self.algorithms):
            problems.append(f"auth.algorithms: must be a non-empty subset of {list(ALLOWED_ALGORITHMS)}")
        if not 0 <= self.leeway_seconds <= 300:
            problems.append("auth.leeway_seconds: must be between 0 and 300")
        if not self.jwks_url.startswith(("https://", "http://")):
            problems.append("auth.jwks_url: must be an http(s) URL")
        if self.jwks_refresh_interval_seconds < 1 or self.jwks_cache_seconds < 0:
            problems.append("auth.jwks_*_seconds: must be positive")
        if self.jwks_timeout_seconds <= 0:
            problems.append("auth.jwks_timeout_seconds: must be positive")
        if not self.issuer or not self.audience:
            problems.append("auth.issuer/auth.audience: must be set")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AuthSettings:
        """Read `UNDERLAY_AUTH__*` the way `Settings` does, without pydantic."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"UNDERLAY_AUTH__{f.name.upper()}")
            if raw is None:
                continue
            kind = str(f.type)
            if kind == "int":
                values[f.name] = int(raw)
            elif kind == "float":
                values[f.name] = float(raw)
            elif kind.startswith("list"):
                values[f.name] = (
                    json.loads(raw) if raw.startswith("[") else [p.strip() for p in raw.split(",")]
                )
            else:
                values[f.name] = raw
        return cls(**values)
