"""Circuit breaker settings for calls to external services (`UNDERLAY_BREAKERS__...`), a section of `Settings`."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BreakerPolicy(BaseModel):
    """`failures` failures in a row (across every instance) open the circuit for `open_seconds`."""

    failures: int = Field(default=5, ge=1, le=1000)
    open_seconds: float = Field(default=30.0, gt=0, le=3600)


class BreakerOverride(BaseModel):
    """A service's own policy; a field left unset (None) inherits the section's value, not the default."""

    failures: int | None = Field(default=None, ge=1, le=1000)
    open_seconds: float | None = Field(default=None, gt=0, le=3600)


class BreakerSettings(BreakerPolicy):
    """The default policy, and overrides per service name: `{"services": {"payments": {"failures": 3}}}`."""

    # A failure count that sees no new failure for this long is forgotten (the Redis key expires).
    failure_window_seconds: float = Field(default=60.0, gt=0, le=86_400)
    services: dict[str, BreakerOverride] = Field(default_factory=dict)

    def policy(self, name: str) -> BreakerPolicy:
        """The section's policy, with the fields `services[name]` sets."""
        override = self.services.get(name)
        return BreakerPolicy(
            failures=self.failures if override is None or override.failures is None else override.failures,
            open_seconds=(
                self.open_seconds
                if override is None or override.open_seconds is None
                else override.open_seconds
            ),
        )
