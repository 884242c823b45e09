"""Stage config (dev, prod): validated by pydantic at synth; an invalid file fails naming every bad field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

STAGES_DIR = Path(__file__).resolve().parent / "stages"
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)


class StageConfigError(Exception):
    """Raised with one line per bad field."""


class ApiConfig(BaseModel):
    throttle_rate: float = Field(gt=0)
    throttle_burst: int = Field(gt=0)
    authorizer_cache_seconds: int = Field(ge=0, le=3600)
    cors_origins: list[str] = Field(default_factory=list)


class AuthConfig(BaseModel):
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks_url: str = Field(pattern=r"^https://")


class StageConfig(BaseModel):
    stage: Literal["dev", "staging", "prod"]
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = None
    api: ApiConfig
    auth: AuthConfig
    log_retention_days: int
    removal_policy: Literal["retain", "destroy"]
    tracing: bool = False
    redis_node_type: str = Field(pattern=r"^cache\.")
    redis_replicas: int = Field(ge=0, le=5)
    audit_retention_days: int = Field(ge=1, le=36500)
    alarm_email: str | None = None
    alarm_5xx_rate_percent: float = Field(default=1.0, gt=0, le=100)
    alarm_p95_latency_ms: int = Field(default=1000, gt=0)

    def model_post_init(self, _: object) -> None:
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(f"log_retention_days must be one of {LOG_RETENTION_DAYS}")


def load_stage_config(path: Path) -> StageConfig:
    try:
        return StageConfig.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise StageConfigError(f"stage config {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise StageConfigError(f"stage config {path} is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors()]
        raise StageConfigError(f"stage config {path} is invalid:\n" + "\n".join(lines)) from exc
