"""Admin settings that must fit the deployment they run in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from underlay import declaration
from underlay.admin.settings import AdminSettings


def _le(field: str) -> float:
    (bound,) = [
        m.le for m in AdminSettings.model_fields[field].metadata if getattr(m, "le", None) is not None
    ]
    return float(bound)


def test_the_stats_deadline_cannot_reach_the_admin_function_timeout() -> None:
    """A deadline at or past the function's timeout turns slow sections into a Lambda timeout (a 5xx from API
    Gateway) instead of per-section errors; a second stays for the answer."""
    (admin,) = [f for f in declaration.FUNCTIONS if f.name == "admin"]
    assert _le("stats_timeout_seconds") <= admin.timeout_s - 1
    with pytest.raises(ValidationError):
        AdminSettings(stats_timeout_seconds=15)
