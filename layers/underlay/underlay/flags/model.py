"""The feature flag model: what the API accepts and stores, and what the evaluator compiles.

A flag has a type (`boolean`, `string`, `number`, `json`) and named variants carrying values of that type (a
boolean flag without variants gets `{"true": true, "false": false}`). `default` is the value served when the flag
is on and nothing else matched (and, unless `off` is given, when it is off or archived). Evaluation order:
archived → disabled → prerequisites → targets (exclude, then include) → rules (first match wins) → rollout →
default. Bucketing hashes `<key>.<salt>.<bucket_by value>` into 0..99999, so a user keeps their bucket on every
instance, after restarts, and when the percentage grows.

Validation happens here, once, with errors that name the field (`rules.2.conditions.0.value`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

FlagType = Literal["boolean", "string", "number", "json"]
Kind = Literal["temporary", "permanent"]
Operator = Literal[
    "eq",
    "neq",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "ends_with",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "semver_eq",
    "semver_gt",
    "semver_gte",
    "semver_lt",
    "semver_lte",
    "before",
    "after",
]
LIST_OPERATORS = frozenset({"in", "not_in"})
NUMERIC_OPERATORS = frozenset({"gt", "gte", "lt", "lte"})
SEMVER_OPERATORS = frozenset({"semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte"})
DATETIME_OPERATORS = frozenset({"before", "after"})
REGEX_MAX_LENGTH = 256
BUCKETS = 100_000  # bucket space: 0..99999, so a percentage has three decimals

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Attribute = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")]
_SEMVER = re.compile(r"^v?([0-9]+)\.([0-9]+)\.([0-9]+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
# Nested quantifiers ((a+)+, (a*)*, (a|a)+ ...) are what make a regex backtrack catastrophically.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*[+*{?]")


def parse_semver(text: str) -> tuple[int, int, int, tuple[tuple[int, int | str], ...]]:
    """A comparable key: pre-releases sort before the release (1.0.0-rc.1 < 1.0.0)."""
    match = _SEMVER.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a semantic version")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch), ((1, 0),)
    # SemVer 11.4.3: numeric identifiers sort before alphanumeric ones (and the two never compare directly).
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), ((0, 0), *parts)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Condition(_Model):
    attribute: Attribute
    operator: Operator
    value: Any

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Condition:
        op, value = self.operator, self.value
        if op in LIST_OPERATORS:
            if not isinstance(value, list) or not value or len(value) > 1000:
                raise ValueError(f"'{op}' needs a list of 1 to 1000 values")
        elif op in NUMERIC_OPERATORS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"'{op}' needs a number")
        elif op in SEMVER_OPERATORS:
            if not isinstance(value, str):
                raise ValueError(f"'{op}' needs a version string")
            parse_semver(value)
        elif op in DATETIME_OPERATORS:
            if not isinstance(value, str):
                raise ValueError(f"'{op}' needs an ISO 8601 date-time")
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError(f"'{op}' needs a date-time with a time zone")
        elif op == "regex":
            if not isinstance(value, str) or len(value) > REGEX_MAX_LENGTH:
                raise ValueError(f"'regex' needs a pattern of at most {REGEX_MAX_LENGTH} characters")
            if _NESTED_QUANTIFIER.search(value) or re.search(r"\\\d", value):
                raise ValueError(
                    "the pattern could backtrack catastrophically (nested quantifiers, backreferences)"
                )
            re.compile(value)
        elif op in ("contains", "starts_with", "ends_with"):
            if not isinstance(value, str):
                raise ValueError(f"'{op}' needs a string")
        elif isinstance(value, dict | list):
            raise ValueError(f"'{op}' compares with a single value")
        return self


class Serve(_Model):
    """What a rule serves: a variant, or a split of variants (weights), or a percentage of `true`."""

    variant: str | None = None
    rollout: Rollout | None = None

    @model_validator(mode="after")
    def _one(self) -> Serve:
        if (self.variant is None) == (self.rollout is None):
            raise ValueError("give exactly one of 'variant' or 'rollout'")
        return self


class Rule(_Model):
    description: str = Field(default="", max_length=256)
    conditions: list[Condition] = Field(default_factory=list, max_length=50)
    segment: Slug | None = None  # the conditions of a stored segment, ANDed with this rule's own
    serve: Serve

    @model_validator(mode="after")
    def _matches_something(self) -> Rule:
        if not self.conditions and self.segment is None:
            raise ValueError("a rule needs conditions or a segment")
        return self


class Rollout(_Model):
    percentage: float | None = Field(default=None, ge=0, le=100)  # boolean flags: share served `true`
    bucket_by: Attribute = "sub"
    weights: dict[str, int] | None = None  # multivariate: variant -> weight (any positive scale)

    @model_validator(mode="after")
    def _one(self) -> Rollout:
        if (self.percentage is None) == (self.weights is None):
            raise ValueError("give exactly one of 'percentage' or 'weights'")
        if self.weights is not None and (
            not self.weights or any(w < 0 for w in self.weights.values()) or not sum(self.weights.values())
        ):
            raise ValueError("weights must be non-negative with a positive total")
        return self


Serve.model_rebuild()


class Targets(_Model):
    include: list[str] = Field(default_factory=list, max_length=10_000)
    exclude: list[str] = Field(default_factory=list, max_length=10_000)
    variant: str | None = None  # what `include` serves; for boolean flags `true` by default
    attribute: Attribute = "sub"


class Prerequisite(_Model):
    key: Slug
    variant: str


class Segment(_Model):
    key: Slug
    description: str = Field(default="", max_length=1024)
    conditions: list[Condition] = Field(min_length=1, max_length=50)


_VALUE_TYPES: dict[str, tuple[type, ...]] = {"boolean": (bool,), "string": (str,), "number": (int, float)}


class FlagSpec(_Model):
    """A flag as created or replaced through the API (without the bookkeeping the store adds)."""

    key: Slug
    type: FlagType
    enabled: bool
    default: Any
    off: Any = None  # served when disabled or archived; `default` when not given
    description: str = Field(default="", max_length=1024)
    owner: str = Field(default="", max_length=256)
    kind: Kind = "temporary"
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=50
    )
    variants: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], Any] = Field(
        default_factory=dict, max_length=100
    )
    rules: list[Rule] = Field(default_factory=list, max_length=200)
    targets: Targets = Field(default_factory=Targets)
    rollout: Rollout | None = None
    prerequisites: list[Prerequisite] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _consistent(self) -> FlagSpec:
        if self.type == "boolean" and not self.variants:
            self.variants = {"true": True, "false": False}
        for name, value in [
            ("default", self.default),
            ("off", self.off),
            *((f"variants.{k}", v) for k, v in self.variants.items()),
        ]:
            if name == "off" and value is None:
                continue
            self._check_type(name, value)
        known = set(self.variants)

        def need(variant: str | None, where: str) -> None:
            if variant is not None and variant not in known:
                raise ValueError(f"{where}: unknown variant {variant!r} (known: {sorted(known)})")

        need(self.targets.variant, "targets.variant")
        if self.targets.include and self.targets.variant is None and self.type != "boolean":
            raise ValueError("targets.variant: say which variant the include list serves")
        for i, rule in enumerate(self.rules):
            need(rule.serve.variant, f"rules.{i}.serve.variant")
            if rule.serve.rollout is not None:
                self._check_rollout(rule.serve.rollout, f"rules.{i}.serve.rollout")
        if self.rollout is not None:
            self._check_rollout(self.rollout, "rollout")
        for i, pre in enumerate(self.prerequisites):
            if pre.key == self.key:
                raise ValueError(f"prerequisites.{i}.key: a flag cannot require itself")
        return self

    def _check_type(self, name: str, value: Any) -> None:
        if self.type == "json":
            if not isinstance(value, dict | list):
                raise ValueError(f"{name}: a json flag's values are objects or arrays")
            return
        allowed = _VALUE_TYPES[self.type]
        if (isinstance(value, bool) and self.type != "boolean") or not isinstance(value, allowed):
            raise ValueError(f"{name}: must be a {self.type}")

    def _check_rollout(self, rollout: Rollout, where: str) -> None:
        if rollout.percentage is not None and self.type != "boolean":
            raise ValueError(
                f"{where}.percentage: percentages serve true/false; use weights for a {self.type} flag"
            )
        for variant in rollout.weights or {}:
            if variant not in self.variants:
                raise ValueError(f"{where}.weights: unknown variant {variant!r}")


class Flag(FlagSpec):
    """A stored flag: the spec plus state and bookkeeping."""

    archived: bool = False
    salt: str
    version: int = Field(ge=1)
    created_at: str
    created_by: str
    updated_at: str
    updated_by: str
    potentially_stale: bool = False
    stale_reasons: list[str] = Field(default_factory=list)

    @property
    def off_value(self) -> Any:
        return self.default if self.off is None else self.off
