"""A per-service breaker override changes only the fields it sets; the others are the section's."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from underlay.breaker_settings import BreakerPolicy, BreakerSettings


def test_an_override_inherits_the_sections_values_for_the_fields_it_leaves_unset() -> None:
    cfg = BreakerSettings.model_validate(
        {
            "failures": 7,
            "open_seconds": 60,
            "services": {"payments": {"failures": 3}, "search": {"open_seconds": 5}},
        }
    )
    assert cfg.policy("payments") == BreakerPolicy(failures=3, open_seconds=60)  # not the default 30 s
    assert cfg.policy("search") == BreakerPolicy(failures=7, open_seconds=5)
    assert cfg.policy("other") == BreakerPolicy(failures=7, open_seconds=60)


def test_an_override_is_validated_like_the_section() -> None:
    with pytest.raises(ValidationError):
        BreakerSettings.model_validate({"services": {"payments": {"failures": 0}}})


def test_the_breaker_uses_the_merged_policy(clean_env: pytest.MonkeyPatch) -> None:
    from underlay.breaker import get_breaker

    clean_env.setenv("UNDERLAY_BREAKERS__OPEN_SECONDS", "60")
    clean_env.setenv("UNDERLAY_BREAKERS__SERVICES", json.dumps({"payments": {"failures": 3}}))
    breaker = get_breaker("payments")
    assert (breaker.failures_to_open, breaker.open_seconds) == (3, 60)
