"""The OpenFeature provider, used through the real `openfeature.api`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from underlay.flags.engine import Snapshot
from underlay.flags.model import Flag
from underlay.flags.openfeature import UnderlayProvider

META = {"salt": "s", "version": 1, "created_at": "t", "created_by": "u", "updated_at": "t", "updated_by": "u"}
DOMAIN = "underlay-tests"


def flag(key: str, **spec: Any) -> Flag:
    return Flag(key=key, **{**META, "enabled": True, **spec})


def catalogue(version: str) -> Snapshot:
    pro = {
        "conditions": [{"attribute": "plan", "operator": "eq", "value": "pro"}],
        "serve": {"variant": "true"},
    }
    return Snapshot.compile(
        [
            flag("checkout", type="boolean", default=False, rules=[pro], targets={"include": ["alice"]}),
            flag("theme", type="string", default="light", variants={"light": "light", "dark": "dark"}),
            flag("limit", type="number", default=10, variants={"ten": 10, "big": 1000}),
            flag("ratio", type="number", default=0.5),
            flag("layout", type="json", default={"cols": 2}),
            flag("old", type="boolean", default=False, archived=True),
            flag(
                "gated", type="boolean", default=True, prerequisites=[{"key": "checkout", "variant": "true"}]
            ),
        ],
        version=version,
    )


@pytest.fixture
def current() -> Iterator[dict[str, Snapshot]]:
    holder = {"snapshot": catalogue("v1")}
    api.set_provider(UnderlayProvider(lambda: holder["snapshot"]), domain=DOMAIN)
    yield holder
    api.clear_providers()


def test_typed_values_through_the_client(current: dict[str, Snapshot]) -> None:
    client = api.get_client(DOMAIN)
    assert client.get_boolean_value("checkout", True) is False
    assert client.get_boolean_value("checkout", False, EvaluationContext(attributes={"plan": "pro"})) is True
    assert client.get_string_value("theme", "x") == "light"
    assert client.get_integer_value("limit", 0) == 10
    assert client.get_float_value("ratio", 0.0) == 0.5
    assert client.get_float_value("limit", 0.0) == 10.0  # an int number flag read as float
    assert client.get_object_value("layout", {}) == {"cols": 2}


def test_targeting_key_is_sub_and_reasons_map(current: dict[str, Snapshot]) -> None:
    client = api.get_client(DOMAIN)
    details = client.get_boolean_details("checkout", False, EvaluationContext(targeting_key="alice"))
    assert (details.value, details.reason, details.variant) == (True, Reason.TARGETING_MATCH, "true")
    assert details.flag_metadata["reason"] == "TARGET_MATCH"
    # targeting_key wins over a `sub` attribute
    ctx = EvaluationContext(targeting_key="alice", attributes={"sub": "mallory"})
    assert client.get_boolean_value("checkout", False, ctx) is True
    rule = client.get_boolean_details("checkout", False, EvaluationContext("bob", {"plan": "pro"}))
    assert rule.reason == Reason.TARGETING_MATCH and rule.flag_metadata["rule_index"] == 0
    assert client.get_boolean_details("checkout", True).reason == Reason.DEFAULT
    assert client.get_boolean_details("old", True).reason == Reason.DISABLED
    gated = client.get_boolean_details("gated", True)
    assert (gated.value, gated.reason) == (True, "PREREQUISITE_FAILED")  # off value: the default, true


def test_missing_flag_and_type_mismatch(current: dict[str, Snapshot]) -> None:
    client = api.get_client(DOMAIN)
    missing = client.get_boolean_details("nope", True)
    assert (missing.value, missing.error_code, missing.reason) == (
        True,
        ErrorCode.FLAG_NOT_FOUND,
        Reason.ERROR,
    )
    wrong = client.get_boolean_details("theme", False)
    assert (wrong.value, wrong.error_code) == (False, ErrorCode.TYPE_MISMATCH)
    assert client.get_integer_details("ratio", 3).error_code == ErrorCode.TYPE_MISMATCH
    assert client.get_integer_details("checkout", 3).error_code == ErrorCode.TYPE_MISMATCH  # a bool is no int
    assert client.get_object_details("theme", {"a": 1}).value == {"a": 1}


def test_follows_the_current_snapshot(current: dict[str, Snapshot]) -> None:
    client = api.get_client(DOMAIN)
    assert client.get_boolean_details("checkout", False).flag_metadata["snapshot"] == "v1"
    current["snapshot"] = Snapshot.compile([flag("checkout", type="boolean", default=True)], version="v2")
    details = client.get_boolean_details("checkout", False)
    assert (details.value, details.flag_metadata["snapshot"]) == (True, "v2")


def test_no_snapshot_serves_the_default() -> None:
    def broken() -> Snapshot:
        raise RuntimeError("store down")

    api.set_provider(UnderlayProvider(broken), domain=DOMAIN)
    try:
        details = api.get_client(DOMAIN).get_boolean_details("checkout", True)
        assert (details.value, details.reason) == (True, Reason.ERROR)
        assert details.error_code == ErrorCode.PROVIDER_NOT_READY
    finally:
        api.clear_providers()
