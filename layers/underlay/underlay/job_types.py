"""Job types, registered in code: a name, a pydantic payload model, retries, backoff, timeout, concurrency key.

    from pydantic import BaseModel
    from underlay.job_types import JobContext, job_type

    class WarmPayload(BaseModel):
        warmers: list[str] = []

    @job_type("cache.warm", WarmPayload, max_attempts=3, timeout_s=120)
    def warm(payload: WarmPayload, ctx: JobContext) -> dict[str, object]:
        for i, name in enumerate(payload.warmers):
            if ctx.cancelled():
                break  # cooperative cancel: the worker marks the job cancelled
            ctx.progress(100 * i // len(payload.warmers), f"warming {name}")
        return {"warmed": len(payload.warmers)}  # the result summary stored on the job

Built-in names are dotted lowercase (`cache.warm`, `audit.digest`, ...). A handler's module must be listed in
`JOB_MODULES` so the worker (and `jobs.enqueue`, which validates payloads) imports it; app teams call
`register_modules("myapp.jobs")` from their own code.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class Backoff(NamedTuple):
    """Delay before retry n (1-based): min(cap, base * factor**(n-1)), with full jitter if `jitter`."""

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 16.0
    jitter: bool = True

    def delay_s(self, retry: int, random: Callable[[], float] | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * self.factor ** max(0, retry - 1))
        if not self.jitter:
            return ceiling
        import random as _random

        return ceiling * (random or _random.random)()


class JobContext(Protocol):
    """What a running job can see and do."""

    job_id: str
    attempt: int  # 1 on the first run

    def progress(self, percent: int, message: str = "") -> None:
        """Report progress (0-100); visible on `GET /v1/jobs/{id}`."""

    def cancelled(self) -> bool:
        """True once the job was cancelled; poll it and stop cooperatively."""


class JobType(NamedTuple):
    name: str
    handler: Callable[[Any, JobContext], Any]
    payload_model: type[BaseModel]
    max_attempts: int = 3
    backoff: Backoff = Backoff()
    timeout_s: int = 60
    concurrency_key: str | None = None  # a payload field; jobs with the same value never run at once
    description: str = ""


H = TypeVar("H", bound=Callable[..., Any])

_REGISTRY: dict[str, JobType] = {}

# Modules that register built-in job types, imported on first look-up.
JOB_MODULES: list[str] = [
    # --- cache (issue 3) ---
    "underlay.cache.jobs",
    # --- end of cache ---
    # --- flags (issue 4) ---
    "underlay.flags.service",
    # --- end of flags ---
    # --- audit (issue 6) ---
    "underlay.audit.jobs",
    # --- end of audit ---
    # --- jobs (issue 7) ---
    "underlay.health_jobs",
    "underlay.email.jobs",
    # --- end of jobs ---
    # --- admin (issue 8) ---
    # --- end of admin ---
]
_loaded: set[str] = set()


def job_type(
    name: str,
    payload_model: type[BaseModel],
    *,
    max_attempts: int = 3,
    backoff: Backoff | None = None,
    timeout_s: int = 60,
    concurrency_key: str | None = None,
    description: str = "",
) -> Callable[[H], H]:
    """Register the decorated function as the handler of job type `name`."""
    if not _NAME.match(name):
        raise ValueError(f"job type {name!r} must be dotted lowercase, like 'cache.warm'")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    def register(handler: H) -> H:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"job type {name!r} is registered twice")
        _REGISTRY[name] = JobType(
            name,
            handler,
            payload_model,
            max_attempts,
            backoff or Backoff(),
            timeout_s,
            concurrency_key,
            description or (handler.__doc__ or "").strip().split("\n")[0],
        )
        return handler

    return register


def register_modules(*modules: str) -> None:
    """Import modules that register job types (app teams' own, say)."""
    for module in modules:
        if module not in _loaded:
            importlib.import_module(module)
            _loaded.add(module)


def get(name: str) -> JobType:
    """The registered job type; KeyError if unknown."""
    register_modules(*JOB_MODULES)
    return _REGISTRY[name]


def all_types() -> dict[str, JobType]:
    register_modules(*JOB_MODULES)
    return dict(_REGISTRY)
