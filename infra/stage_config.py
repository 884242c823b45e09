"""Per-stage deployment settings (`infra/stages/<stage>.json`), validated by pydantic before any resource exists.

An invalid file fails synth with one line per bad field, so a typo in prod.json is a one-read fix:

    stage config infra/stages/prod.json is invalid:
      api.throttle_rate: Input should be greater than 0
      log_retention_days: Value error, CloudWatch Logs accepts one of 1, 3, 5, ...
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from underlay.email.addresses import EmailAddress
from underlay.settings import Stage

REPO = Path(__file__).resolve().parent.parent
STAGES_DIR = Path(__file__).resolve().parent / "stages"

# The only values CloudWatch Logs accepts for a log group's retention (PutRetentionPolicy).
LOG_RETENTION_DAYS: tuple[int, ...] = (
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
    """A stage config that cannot be used; the message names the file and every bad field."""


class _Strict(BaseModel):
    # A misspelt key must fail, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiConfig(_Strict):
    throttle_rate: float = Field(gt=0, description="Steady-state requests per second for the stage")
    throttle_burst: int = Field(gt=0, description="Burst bucket size")
    authorizer_cache_seconds: int = Field(default=300, ge=0, le=3600)
    cors_origins: list[str] = Field(default_factory=list)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        bad = [o for o in value if o != "*" and not o.startswith(("https://", "http://"))]
        if bad:
            raise ValueError(f"origins must be '*' or start with http:// or https://, got {bad}")
        return value


class AuthConfig(_Strict):
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks_url: str = Field(pattern=r"^https://\S+$")


class NetworkConfig(_Strict):
    # 0 keeps dev free of NAT charges: the in-VPC functions reach AWS through endpoints only.
    nat_gateways: int = Field(default=0, ge=0, le=3)
    max_azs: int = Field(default=2, ge=2, le=3)
    # Interface endpoints bill per AZ-hour (~7 USD/month each per AZ). One AZ serves the whole VPC (at
    # cross-AZ data rates) and halves that in dev; prod keeps one per AZ so an AZ outage does not take them.
    endpoints_single_az: bool = False


class RedisConfig(_Strict):
    node_type: str = Field(pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$")
    replicas: int = Field(default=0, ge=0, le=5)


class AlarmsConfig(_Strict):
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    api_5xx_rate_percent: float = Field(default=1.0, gt=0, le=100)
    api_p95_latency_ms: int = Field(default=1000, gt=0)
    # SPEC: a job queue this deep alarms (messages waiting, not those in flight or delayed).
    queue_depth: int = Field(default=1000, gt=0)


class EmailConfig(_Strict):
    """`email.send` through SES. Without a from-address the stage sends no e-mail: the worker gets no SES
    permission and the job fails with a clear configuration error (dev needs no verified identity)."""

    # A verified SES identity: this address, or its domain. Validated as the layer validates it.
    from_address: EmailAddress | None = None
    from_name: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^\r\n]+$")

    @property
    def domain(self) -> str | None:
        return self.from_address.rpartition("@")[2] if self.from_address else None


_PROBLEM_SEPARATOR = "\n"
# Settings CDK wires itself (from other stage fields or from the resources it creates): a value here would disagree
# with the infrastructure (the alarms watch the default metrics namespace; X-Ray follows `tracing`).
_CDK_WIRED = (
    "tables",
    "buckets",
    "queues",
    "event_bus",
    "redis",
    "auth",
    "stage",
    "service",
    "version",
    "release_id",
)
_CDK_WIRED_KEYS = {
    "observability.tracing_enabled": "set `tracing` instead",
    "observability.metrics_namespace": "the alarms and the dashboard watch the Underlay namespace",
    "http.cors_origins": "set `api.cors_origins` instead",
    "storage.cdn_base_url": "the CDN's URL comes from the distribution (`cdn`)",
}
_SECRET_ARN = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$"
)
SETTINGS_MAX_BYTES = 2048  # of the 4 KB Lambda allows for all environment variables


def _settings_document(value: dict[str, Any]) -> dict[str, Any]:
    """The stage's layer of runtime settings (`underlay.config`): validated against the same schema the functions
    use, with every bad field named (`settings.cache.default_ttl_seconds: ...`). Secrets never go in a file."""
    from pydantic import ValidationError as _Invalid
    from underlay.config import keys
    from underlay.config.runtime import compose, validate

    problems = [
        f"{k.name}: secrets come from Secrets Manager or SSM SecureString, never from a stage file"
        for k in keys.catalogue().values()
        if k.secret and keys.value_at(value, k.path)[0]
    ]
    for section, fields in value.items():
        if section in _CDK_WIRED:
            problems.append(f"{section}: set by CDK, not in a stage file")
            continue
        names = [f"{section}.{f}" for f in fields] if isinstance(fields, dict) else [section]
        problems += [f"{name}: there is no such setting" for name in names if keys.lookup(name) is None]
        problems += [f"{name}: {_CDK_WIRED_KEYS[name]}" for name in names if name in _CDK_WIRED_KEYS]
    sentry = keys.value_at(value, ("observability", "sentry_dsn_secret_arn"))[1]
    if sentry is not None and not (isinstance(sentry, str) and _SECRET_ARN.match(sentry)):
        problems.append(
            "observability.sentry_dsn_secret_arn: the complete ARN of a Secrets Manager secret "
            "(arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>), which CDK grants"
        )
    if not problems:
        try:
            validate(compose(value, {}, {}))
        except _Invalid as error:
            problems += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
    if problems:
        raise ValueError(_PROBLEM_SEPARATOR.join(problems))
    return value


class CdnConfig(_Strict):
    """A CloudFront distribution serving the storage bucket's `public/` keys (`underlay.storage.cdn_url`). Without
    it, `cdn_url` gives the bucket's own URL, which the private bucket refuses on AWS."""

    enabled: bool = False
    price_class: Literal["PriceClass_100", "PriceClass_200", "PriceClass_All"] = "PriceClass_100"
    # A WAFv2 web ACL of CLOUDFRONT scope (such ACLs live in us-east-1 whatever the stack's region).
    web_acl_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:wafv2:us-east-1:\d{12}:global/webacl/[A-Za-z0-9_-]+/[a-f0-9-]+$",
    )


class StageConfig(_Strict):
    stage: Stage
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    api: ApiConfig
    auth: AuthConfig
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    redis: RedisConfig
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)
    email: EmailConfig = Field(default_factory=EmailConfig)
    cdn: CdnConfig = Field(default_factory=CdnConfig)
    log_retention_days: int
    removal_policy: Literal["retain", "destroy"]
    tracing: bool = False
    audit_retention_days: int = Field(ge=1, le=36500, description="Object Lock COMPLIANCE days")
    # Layer 2 of the runtime configuration: any non-secret setting, e.g. {"cache": {"default_ttl_seconds": 300}}.
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _settings_document(value)

    def settings_document(self) -> dict[str, Any]:
        """What functions get as `UNDERLAY_STAGE_SETTINGS`: the stage's settings plus the API's CORS origins and
        the tracing switch, so runtime values can still override the origins."""
        from underlay.config.runtime import merge

        derived = {
            "http": {"cors_origins": self.api.cors_origins},
            "observability": {"tracing_enabled": self.tracing},
        }
        return merge(derived, self.settings)

    def settings_json(self) -> str:
        """`settings_document()` as the `UNDERLAY_STAGE_SETTINGS` value; Lambda allows 4 KB of environment in all."""
        document = json.dumps(self.settings_document(), separators=(",", ":"), sort_keys=True)
        if len(document) > SETTINGS_MAX_BYTES:
            raise StageConfigError(
                f"stage {self.stage}: the settings document is {len(document)} bytes; the limit is {SETTINGS_MAX_BYTES}"
            )
        return document

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            allowed = ", ".join(map(str, LOG_RETENTION_DAYS))
            raise ValueError(f"CloudWatch Logs accepts one of {allowed}; got {value}")
        return value


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def stage_file(stage: str) -> Path:
    return STAGES_DIR / f"{stage}.json"


def load_stage_config(path: Path, *, expected_stage: str | None = None) -> StageConfig:
    """Read and validate a stage file. Raises `StageConfigError` naming every bad field."""
    shown = _display(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in STAGES_DIR.glob("*.json")))
        raise StageConfigError(f"stage config {shown} does not exist (known stages: {known})") from None
    except json.JSONDecodeError as exc:
        raise StageConfigError(f"stage config {shown} is not valid JSON: {exc}") from None
    try:
        config = StageConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            where = ".".join(map(str, e["loc"])) or "(top level)"
            if where == "settings" and e["type"] == "value_error":  # one line per bad setting
                problems = str(e["msg"]).removeprefix("Value error, ").split(_PROBLEM_SEPARATOR)
                lines += [f"  settings.{p}" for p in problems]
            else:
                lines.append(f"  {where}: {e['msg']}")
        raise StageConfigError(f"stage config {shown} is invalid:\n" + "\n".join(lines)) from None
    if expected_stage is not None and config.stage != expected_stage:
        raise StageConfigError(
            f"stage config {shown} is invalid:\n  stage: file says {config.stage!r} but {expected_stage!r} was requested"
        )
    return config
