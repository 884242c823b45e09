"""The flag evaluation engine: operators, evaluation order and reasons, bucketing, prerequisites and cycles."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from underlay.flags.engine import (
    ARCHIVED,
    DEFAULT,
    DISABLED,
    ERROR,
    NOT_FOUND,
    PREREQUISITE_FAILED,
    RULE_MATCH,
    SPLIT,
    TARGET_MATCH,
    Evaluation,
    Snapshot,
    _compile_condition,
    bucket,
    find_cycle,
)
from underlay.flags.model import BUCKETS, Condition, Flag, Segment

REPO = Path(__file__).resolve().parents[2]
ABSENT = object()
META = {
    "salt": "s1",
    "version": 1,
    "created_at": "t",
    "created_by": "u",
    "updated_at": "t",
    "updated_by": "u",
}


def flag(key: str = "f", **spec: Any) -> Flag:
    spec.setdefault("type", "boolean")
    spec.setdefault("enabled", True)
    spec.setdefault("default", False)
    return Flag(key=key, **{**META, **spec})


def one_rule(operator: str, value: Any, attribute: str = "attr") -> Flag:
    rule = {
        "conditions": [{"attribute": attribute, "operator": operator, "value": value}],
        "serve": {"variant": "true"},
    }
    return flag(rules=[rule])


OPERATOR_CASES = [
    # (operator, condition value, attribute value, matches)
    ("eq", "US", "US", True),
    ("eq", "US", "us", False),
    ("eq", "US", ABSENT, False),
    ("eq", "US", None, False),
    ("eq", "US", ["US"], False),
    ("eq", "1", 1, False),
    ("eq", 1, 1.0, True),
    ("eq", 1, True, False),
    ("eq", 1, "1", False),
    ("eq", True, True, True),
    ("eq", True, 1, False),
    ("eq", False, 0, False),
    ("neq", "US", "DE", True),
    ("neq", "US", "US", False),
    ("neq", "US", ABSENT, False),
    ("neq", "US", 5, True),
    ("neq", True, 1, True),
    ("neq", 2, 2.0, False),
    ("in", ["US", "CA"], "CA", True),
    ("in", ["US", "CA"], "DE", False),
    ("in", ["US", "CA"], ABSENT, False),
    ("in", [1, 2], 2.0, True),
    ("in", [1, 2], True, False),
    ("in", [True], 1, False),
    ("in", [True, "x"], True, True),
    ("in", ["US"], ["US"], False),
    ("in", ["US"], {"US": 1}, False),
    ("not_in", ["US"], "DE", True),
    ("not_in", ["US"], "US", False),
    ("not_in", ["US"], ABSENT, False),
    ("not_in", ["US"], ["DE"], False),
    ("not_in", [True], False, True),
    ("not_in", [1], True, True),
    ("contains", "ample", "example", True),
    ("contains", "z", "example", False),
    ("contains", "admin", ["dev", "admin"], True),
    ("contains", "adm", ["admin"], False),
    ("contains", "1", 1, False),
    ("contains", "a", {"a": 1}, False),
    ("starts_with", "ex", "example", True),
    ("starts_with", "am", "example", False),
    ("starts_with", "1", 12, False),
    ("ends_with", "le", "example", True),
    ("ends_with", "ex", "example", False),
    ("ends_with", "le", ["example"], False),
    ("regex", r"^user-\d+$", "user-42", True),
    ("regex", r"^user-\d+$", "admin-42", False),
    ("regex", "b", "abc", True),  # search, not match
    ("regex", r"\d", 42, False),
    ("gt", 10, 11, True),
    ("gt", 10, 10, False),
    ("gt", 10, 10.5, True),
    ("gt", 10, "11", False),
    ("gt", 0, True, False),
    ("gte", 10, 10, True),
    ("gte", 10, 9.99, False),
    ("lt", 10, 9, True),
    ("lt", 10, 10, False),
    ("lt", 10, ABSENT, False),
    ("lt", 10, [1], False),
    ("lte", 10, 10, True),
    ("lte", 10, 11, False),
    ("semver_eq", "1.2.3", "v1.2.3", True),
    ("semver_eq", "1.2.3", "1.2.4", False),
    ("semver_eq", "1.2.3", "1.2.3+build.5", True),
    ("semver_eq", "1.2.3", "not-a-version", False),
    ("semver_eq", "1.2.3", 123, False),
    ("semver_gt", "1.2.3", "1.10.0", True),  # numeric, not lexicographic
    ("semver_gt", "1.0.0", "1.0.0-rc.1", False),  # a pre-release is below its release
    ("semver_gt", "1.0.0-rc.1", "1.0.0-rc.2", True),
    ("semver_gt", "1.0.0-1", "1.0.0-rc", True),  # numeric identifiers rank below alphanumeric ones
    ("semver_gt", "1.0.0-rc", "1.0.0-1", False),
    ("semver_gte", "2.0.0", "2.0.0", True),
    ("semver_gte", "2.0.0", "1.99.99", False),
    ("semver_lt", "2.0.0", "1.9.9", True),
    ("semver_lt", "1.0.0", "1.0.0-alpha", True),
    ("semver_lt", "1.0.0", ["0.1.0"], False),
    ("semver_lte", "2.0.0", "2.0.1", False),
    ("semver_lte", "2.0.0", "2.0.0", True),
    ("before", "2030-01-01T00:00:00Z", "2029-12-31T23:59:59+00:00", True),
    ("before", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00+00:00", False),
    ("before", "2030-01-01T00:00:00Z", "2030-01-01T01:00:00+02:00", True),  # 23:00 UTC
    ("before", "2030-01-01T00:00:00Z", "2029-12-31T23:00:00", True),  # naive: UTC
    ("before", "2030-01-01T00:00:00Z", datetime(2029, 1, 1, tzinfo=UTC), True),
    ("before", "2030-01-01T00:00:00Z", "yesterday", False),
    ("before", "2030-01-01T00:00:00Z", 1_700_000_000, False),
    ("before", "2000-01-01T00:00:00Z", ABSENT, False),  # absent: now
    ("before", "2999-01-01T00:00:00Z", ABSENT, True),
    ("after", "2020-01-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00", True),  # half-open windows
    ("after", "2020-01-01T00:00:00+00:00", "2019-12-31T23:59:59+00:00", False),
    ("after", "2000-01-01T00:00:00Z", ABSENT, True),
    ("after", "2999-01-01T00:00:00Z", None, False),
]


def _context(attribute_value: Any) -> dict[str, Any]:
    return {} if attribute_value is ABSENT else {"attr": attribute_value}


@pytest.mark.parametrize(("operator", "value", "attribute_value", "matches"), OPERATOR_CASES)
def test_operator_in_a_rule(operator: str, value: Any, attribute_value: Any, matches: bool) -> None:
    snapshot = Snapshot.compile([one_rule(operator, value)])
    result = snapshot.evaluate("f", _context(attribute_value))
    assert result.reason == (RULE_MATCH if matches else DEFAULT), result
    assert result.value is matches


@pytest.mark.parametrize(("operator", "value", "attribute_value", "matches"), OPERATOR_CASES)
def test_operator_closure(operator: str, value: Any, attribute_value: Any, matches: bool) -> None:
    """The closures (used for segments' fallbacks and the operators the generated code does not inline) agree."""
    condition = Condition(attribute="attr", operator=operator, value=value)  # type: ignore[arg-type]
    assert _compile_condition(condition)(_context(attribute_value)) is matches


@pytest.mark.parametrize(
    ("context", "matches"),
    [
        ({"user": {"geo": {"country": "DE"}}}, True),
        ({"user": {"geo": {"country": "US"}}}, False),
        ({"user.geo.country": "DE", "user": {"geo": {"country": "US"}}}, True),  # a literal key wins
        ({"user": {"geo": "DE"}}, False),  # walks into a string: no match
        ({"user": ["geo"]}, False),
        ({"user": None}, False),
        ({}, False),
    ],
)
def test_dotted_attributes(context: dict[str, Any], matches: bool) -> None:
    for operator, value in [("eq", "DE"), ("in", ["DE"]), ("not_in", ["US"]), ("starts_with", "D")]:
        snapshot = Snapshot.compile([one_rule(operator, value, attribute="user.geo.country")])
        assert (snapshot.evaluate("f", context).reason == RULE_MATCH) is matches, (operator, context)
        condition = Condition(attribute="user.geo.country", operator=operator, value=value)  # type: ignore[arg-type]
        assert _compile_condition(condition)(context) is matches


def test_regex_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    segment = Segment(key="bots", conditions=[{"attribute": "ua", "operator": "regex", "value": "(?i)bot"}])
    rules = [
        {
            "conditions": [{"attribute": "email", "operator": "regex", "value": r"@corp\.example$"}],
            "serve": {"variant": "true"},
        },
        {
            "segment": "bots",
            "conditions": [{"attribute": "ua", "operator": "neq", "value": "x"}],
            "serve": {"variant": "true"},
        },
    ]
    snapshot = Snapshot.compile([flag(rules=rules)], [segment])

    def no_compiling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a regex was compiled while evaluating")

    monkeypatch.setattr(re, "_compile", no_compiling)
    monkeypatch.setattr(re, "compile", no_compiling)
    for _ in range(3):
        assert snapshot.evaluate("f", {"email": "a@corp.example"}).rule_index == 0
        assert snapshot.evaluate("f", {"ua": "GoogleBot/2.1"}).rule_index == 1
        assert snapshot.evaluate("f", {"email": "a@other.example", "ua": "Firefox"}).reason == DEFAULT


# --- evaluation order and reasons ---------------------------------------------------------------------------


def full_flag(**overrides: Any) -> Flag:
    """A string flag with targets, two rules (the second on a segment), a split and a default."""
    spec: dict[str, Any] = {
        "type": "string",
        "default": "control",
        "off": "off",
        "variants": {"control": "control", "a": "A", "b": "B", "off": "off"},
        "targets": {"include": ["alice", "carol"], "exclude": ["carol"], "variant": "b"},
        "rules": [
            {
                "conditions": [{"attribute": "country", "operator": "eq", "value": "DE"}],
                "serve": {"variant": "a"},
            },
            {
                "segment": "staff",
                "conditions": [{"attribute": "tier", "operator": "eq", "value": "gold"}],
                "serve": {"variant": "b"},
            },
        ],
        "rollout": {"weights": {"a": 1, "control": 1}},
    }
    return flag(**{**spec, **overrides})


STAFF = Segment(
    key="staff", conditions=[{"attribute": "email", "operator": "ends_with", "value": "@underlay.dev"}]
)


def test_target_include_exclude_and_order() -> None:
    snapshot = Snapshot.compile([full_flag()], [STAFF])
    assert snapshot.evaluate("f", {"sub": "alice", "country": "DE"}) == Evaluation(
        "f", "B", "b", TARGET_MATCH
    )
    # exclude wins over include, and over the rules: it serves the default
    assert snapshot.evaluate("f", {"sub": "carol", "country": "DE"}) == Evaluation(
        "f", "control", "control", TARGET_MATCH
    )


def test_rules_first_match_wins_with_index() -> None:
    snapshot = Snapshot.compile([full_flag()], [STAFF])
    both = {"sub": "bob", "country": "DE", "tier": "gold", "email": "bob@underlay.dev"}
    assert snapshot.evaluate("f", both) == Evaluation("f", "A", "a", RULE_MATCH, 0)
    second = {"sub": "bob", "tier": "gold", "email": "bob@underlay.dev"}
    assert snapshot.evaluate("f", second) == Evaluation("f", "B", "b", RULE_MATCH, 1)
    # the segment's conditions AND the rule's own
    assert snapshot.evaluate("f", {"sub": "bob", "tier": "gold", "email": "bob@else.dev"}).reason == SPLIT
    assert (
        snapshot.evaluate("f", {"sub": "bob", "tier": "silver", "email": "bob@underlay.dev"}).reason == SPLIT
    )


def test_unknown_segment_never_matches_and_keeps_indexes() -> None:
    rules = [
        {"segment": "nowhere", "serve": {"variant": "true"}},
        {
            "conditions": [{"attribute": "sub", "operator": "eq", "value": "bob"}],
            "serve": {"variant": "true"},
        },
    ]
    snapshot = Snapshot.compile([flag(rules=rules)])
    assert snapshot.evaluate("f", {"sub": "bob"}) == Evaluation("f", True, "true", RULE_MATCH, 1)
    assert snapshot.evaluate("f", {"sub": "eve"}) == Evaluation("f", False, "false", DEFAULT)


def test_split_then_default() -> None:
    snapshot = Snapshot.compile([full_flag(), full_flag(key="g", rollout=None)], [STAFF])
    result = snapshot.evaluate("f", {"sub": "bob"})
    assert result.reason == SPLIT and result.variant in ("a", "control") and result.rule_index is None
    assert result.value == {"a": "A", "control": "control"}[result.variant]
    assert snapshot.evaluate("g", {"sub": "bob"}) == Evaluation("g", "control", "control", DEFAULT)


def test_rule_split_reports_its_index() -> None:
    rules = [
        {
            "conditions": [{"attribute": "beta", "operator": "eq", "value": True}],
            "serve": {"rollout": {"percentage": 100}},
        }
    ]
    snapshot = Snapshot.compile([flag(rules=rules)])
    assert snapshot.evaluate("f", {"beta": True, "sub": "x"}) == Evaluation("f", True, "true", SPLIT, 0)
    # no bucket_by attribute: in no rollout
    assert snapshot.evaluate("f", {"beta": True}) == Evaluation("f", False, "false", DEFAULT, 0)


def test_disabled_and_archived_serve_off() -> None:
    flags = [
        full_flag(key="off", enabled=False),
        full_flag(key="gone", archived=True),
        full_flag(key="gone-disabled", archived=True, enabled=False),
        flag(key="plain-off", enabled=False, default=True),
    ]
    snapshot = Snapshot.compile(flags, [STAFF])
    alice = {"sub": "alice", "country": "DE"}
    assert snapshot.evaluate("off", alice) == Evaluation("off", "off", "off", DISABLED)
    assert snapshot.evaluate("gone", alice) == Evaluation("gone", "off", "off", ARCHIVED)
    assert snapshot.evaluate("gone-disabled", alice).reason == ARCHIVED
    assert snapshot.evaluate("plain-off", alice) == Evaluation(
        "plain-off", True, "true", DISABLED
    )  # off: default


def test_prerequisites() -> None:
    flags = [
        flag(
            key="base",
            rules=[
                {
                    "conditions": [{"attribute": "plan", "operator": "eq", "value": "pro"}],
                    "serve": {"variant": "true"},
                }
            ],
        ),
        flag(key="needs-base", default=True, off=False, prerequisites=[{"key": "base", "variant": "true"}]),
        flag(key="needs-missing", default=True, prerequisites=[{"key": "missing", "variant": "true"}]),
        flag(key="needs-false", default=True, prerequisites=[{"key": "base", "variant": "false"}]),
    ]
    snapshot = Snapshot.compile(flags)
    assert snapshot.evaluate("needs-base", {"plan": "pro"}) == Evaluation("needs-base", True, "true", DEFAULT)
    assert snapshot.evaluate("needs-base", {"plan": "free"}) == Evaluation(
        "needs-base", False, "false", PREREQUISITE_FAILED
    )
    assert snapshot.evaluate("needs-missing", {}).reason == PREREQUISITE_FAILED
    # a prerequisite serving its default reports the variant with that value, so "false" can be required
    assert snapshot.evaluate("needs-false", {"plan": "free"}).reason == DEFAULT


def test_prerequisites_come_before_targets() -> None:
    flags = [
        flag(key="gate", enabled=False),
        flag(key="f", prerequisites=[{"key": "gate", "variant": "true"}], targets={"include": ["alice"]}),
    ]
    assert Snapshot.compile(flags).evaluate("f", {"sub": "alice"}).reason == PREREQUISITE_FAILED


def test_prerequisite_cycle_is_an_error_not_a_recursion() -> None:
    flags = [
        flag(key="a", prerequisites=[{"key": "b", "variant": "true"}]),
        flag(key="b", prerequisites=[{"key": "c", "variant": "true"}]),
        flag(key="c", prerequisites=[{"key": "a", "variant": "true"}]),
        flag(key="d", default=True, prerequisites=[{"key": "a", "variant": "false"}]),
    ]
    snapshot = Snapshot.compile(flags)
    for key in "abc":
        result = snapshot.evaluate(key, {})
        assert result.reason == ERROR and "cycle" in (result.error or ""), result
    assert snapshot.evaluate("d", {}).reason == PREREQUISITE_FAILED


def test_not_found_serves_the_callers_default() -> None:
    snapshot = Snapshot.compile([flag()])
    assert snapshot.evaluate("nope", {}, default="fallback") == Evaluation(
        "nope", "fallback", None, NOT_FOUND
    )
    assert snapshot.evaluate(["not", "a", "key"], {}).reason == NOT_FOUND  # type: ignore[arg-type]


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(["sub"])

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("context", [["sub", "x"], "sub=x", 42, ExplodingMapping()])
def test_errors_serve_a_default_and_never_raise(context: Any) -> None:
    snapshot = Snapshot.compile(
        [
            flag(
                default=True,
                rules=[
                    {
                        "conditions": [{"attribute": "sub", "operator": "eq", "value": "x"}],
                        "serve": {"variant": "false"},
                    }
                ],
            )
        ]
    )
    assert snapshot.evaluate("f", context) == Evaluation(
        "f", True, None, ERROR, None, snapshot.evaluate("f", context).error
    )
    assert snapshot.evaluate("f", context).error
    assert snapshot.evaluate("f", context, default=False).value is False  # the caller's default wins
    assert [e.reason for e in snapshot.evaluate_all(context)] == [ERROR]


def test_none_context_is_empty_and_other_mappings_work() -> None:
    snapshot = Snapshot.compile([one_rule("eq", "x", attribute="sub")])
    assert snapshot.evaluate("f", None).reason == DEFAULT  # type: ignore[arg-type]

    class Ctx(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            return {"sub": "x"}[key]

        def __iter__(self) -> Iterator[str]:
            return iter(["sub"])

        def __len__(self) -> int:
            return 1

    assert snapshot.evaluate("f", Ctx()).reason == RULE_MATCH


def test_targets_on_another_attribute_and_numbers() -> None:
    snapshot = Snapshot.compile([flag(targets={"include": ["42", "a@x.dev"], "attribute": "email"})])
    assert snapshot.evaluate("f", {"email": "a@x.dev", "sub": "zz"}).reason == TARGET_MATCH
    assert snapshot.evaluate("f", {"email": 42}).reason == TARGET_MATCH
    assert snapshot.evaluate("f", {"sub": "a@x.dev"}).reason == DEFAULT
    assert snapshot.evaluate("f", {"email": ["a@x.dev"]}).reason == DEFAULT


def test_variant_reported_for_default_only_when_a_variant_has_that_value() -> None:
    flags = [
        flag(key="s", type="string", default="plain", variants={"x": "X"}),
        flag(key="n", type="number", default=1, variants={"one": 1.0, "uno": 1}),
    ]
    snapshot = Snapshot.compile(flags)
    assert snapshot.evaluate("s", {}).variant is None
    assert snapshot.evaluate("n", {}).variant == "uno"  # type included: 1.0 is not the int default


def test_evaluate_all_and_keys() -> None:
    snapshot = Snapshot.compile([flag(key="b"), flag(key="a"), flag(key="z", archived=True)], version="v7")
    assert snapshot.version == "v7"
    assert snapshot.keys() == ["a", "b", "z"]
    assert [e.key for e in snapshot.evaluate_all({"sub": "x"})] == ["a", "b"]
    with pytest.raises(ValueError, match="twice"):
        Snapshot.compile([flag(key="a"), flag(key="a")])


# --- bucketing ----------------------------------------------------------------------------------------------


def test_bucket_is_pinned_and_in_range() -> None:
    values = [bucket("new-checkout", "s1", f"user-{i}") for i in range(1000)]
    assert all(0 <= v < BUCKETS for v in values)
    # pinned: a change of hash would move every user between variants
    assert [bucket("new-checkout", "s1", "user-1"), bucket("k", "", ""), bucket("k", "s", "\ud800")] == [
        12267,
        22072,
        61173,
    ]


def test_bucket_is_stable_across_processes() -> None:
    users = [f"user-{i}" for i in range(200)]
    code = (
        "import json, sys\n"
        "from underlay.flags.engine import bucket\n"
        "print(json.dumps([bucket('k', 'salt', u) for u in json.loads(sys.argv[1])]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO / "layers" / "underlay")}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(users)], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [bucket("k", "salt", u) for u in users]


def _share(snapshot: Snapshot, key: str, users: int = 100_000) -> float:
    return sum(snapshot.evaluate(key, {"sub": f"user-{i}"}).value is True for i in range(users)) / users


@pytest.mark.parametrize("percentage", [10, 25, 50])
def test_percentage_distribution(percentage: int) -> None:
    snapshot = Snapshot.compile([flag(key="roll", rollout={"percentage": percentage})])
    assert abs(_share(snapshot, "roll") - percentage / 100) <= 0.01


def test_rollout_is_monotonic() -> None:
    at = {p: Snapshot.compile([flag(key="roll", rollout={"percentage": p})]) for p in (20, 30)}
    users = [{"sub": f"user-{i}"} for i in range(20_000)]
    in_20 = {i for i, u in enumerate(users) if at[20].evaluate("roll", u).value is True}
    in_30 = {i for i, u in enumerate(users) if at[30].evaluate("roll", u).value is True}
    assert in_20 < in_30
    assert 0.18 < len(in_20) / len(users) < 0.22


def test_rollout_edges_and_bucket_by() -> None:
    flags = [
        flag(key="none", rollout={"percentage": 0}),
        flag(key="all", rollout={"percentage": 100}),
        flag(key="tenant", rollout={"percentage": 50, "bucket_by": "org.id"}),
    ]
    snapshot = Snapshot.compile(flags)
    users = [{"sub": f"u{i}", "org": {"id": i % 7}} for i in range(500)]
    assert not any(snapshot.evaluate("none", u).value for u in users)
    assert all(snapshot.evaluate("all", u).value for u in users)
    by_org: dict[int, set[bool]] = {}
    for u in users:
        by_org.setdefault(u["org"]["id"], set()).add(snapshot.evaluate("tenant", u).value)
    assert all(len(served) == 1 for served in by_org.values())  # a tenant is bucketed as one
    assert snapshot.evaluate("all", {}).reason == DEFAULT  # no bucket_by attribute: no rollout


def test_weighted_split_proportions() -> None:
    spec = {"type": "string", "default": "c", "variants": {"a": "A", "b": "B", "c": "C", "z": "Z"}}
    snapshot = Snapshot.compile(
        [flag(key="w", rollout={"weights": {"b": 2, "a": 1, "c": 1, "z": 0}}, **spec)]
    )
    counts: dict[str, int] = {}
    users = 100_000
    for i in range(users):
        result = snapshot.evaluate("w", {"sub": f"user-{i}"})
        counts[result.variant or ""] = counts.get(result.variant or "", 0) + 1
    assert "z" not in counts
    for variant, share in {"a": 0.25, "b": 0.5, "c": 0.25}.items():
        assert abs(counts[variant] / users - share) <= 0.01, counts


def test_weighted_ranges_follow_variant_names() -> None:
    """Ranges are cumulative in name order: a user's bucket decides, whatever the order weights were given in."""
    spec = {"type": "string", "default": "a", "variants": {"a": "A", "b": "B"}}
    one = Snapshot.compile([flag(key="w", rollout={"weights": {"a": 1, "b": 1}}, **spec)])
    other = Snapshot.compile([flag(key="w", rollout={"weights": {"b": 1, "a": 1}}, **spec)])
    for i in range(300):
        user = f"user-{i}"
        expected = "a" if bucket("w", "s1", user) < BUCKETS // 2 else "b"
        assert (
            one.evaluate("w", {"sub": user}).variant == expected == other.evaluate("w", {"sub": user}).variant
        )


# --- find_cycle ---------------------------------------------------------------------------------------------


def test_find_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": ["a"], "a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}) is None  # a diamond
    assert find_cycle({"a": ["missing"], "b": ["a"]}) is None
    assert find_cycle({}) is None
