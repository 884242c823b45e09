"""Property tests: for generated valid flags and arbitrary contexts, evaluation never raises and serves the flag's type."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from underlay.flags.engine import ERROR, NOT_FOUND, REASONS, RULE_MATCH, Snapshot, _compile_condition
from underlay.flags.model import Condition, Flag, Segment

META = {"salt": "p", "version": 1, "created_at": "t", "created_by": "u", "updated_at": "t", "updated_by": "u"}
ATTRIBUTES = ["sub", "country", "age", "version", "at", "tags", "user.country", "user.geo.city", "a.b"]
FLAG_KEYS = ["f0", "f1"]  # two, so prerequisites can form a cycle
SHORT = st.text(alphabet="abcDE1.-@ é", max_size=6)  # the flags' own strings: cheap to draw, still varied
VALUES = {
    "boolean": st.booleans(),
    "string": SHORT,
    "number": st.integers(-1000, 1000) | st.sampled_from([0.5, -2.25, 1e300]),
    "json": st.sampled_from([{}, [], {"a": 1}, [1, "x"], {"nested": {"b": [True]}}]),
}
# what contexts hold: nested mappings, lists, None, numbers (nan, inf, huge), weird strings
WEIRD_TEXT = st.text(max_size=20) | st.sampled_from(
    ["", "\x00", "\ud800", "1.2.3", "v2.0.0-rc.1", "2030-01-01T00:00:00Z", "é" * 50]
)
CONTEXT_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | WEIRD_TEXT,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["country", "geo", "city", "b"]), inner, max_size=4
        )
    ),
    max_leaves=8,
)
CONTEXTS = st.dictionaries(st.sampled_from(ATTRIBUTES) | st.text(max_size=6), CONTEXT_VALUES, max_size=6)


def _condition_value(operator: str) -> st.SearchStrategy[Any]:
    if operator in ("in", "not_in"):
        return st.lists(st.none() | st.booleans() | st.integers(-5, 5) | SHORT, min_size=1, max_size=4)
    if operator in ("gt", "gte", "lt", "lte"):
        return st.integers(-100, 100) | st.floats(-1e6, 1e6)
    if operator.startswith("semver_"):
        return st.sampled_from(["1.0.0", "0.9.12", "2.0.0-rc.1", "v3.1.4", "1.0.0-1", "1.0.0-alpha.beta"])
    if operator in ("before", "after"):
        return st.sampled_from(
            ["2000-01-01T00:00:00Z", "2030-06-01T12:00:00+02:00", "2025-01-01T00:00:00-05:00"]
        )
    if operator == "regex":
        return st.sampled_from(["^a", "b$", "[0-9]+", "x.y", "(?i)bot", "^$"])
    if operator in ("contains", "starts_with", "ends_with"):
        return SHORT
    return st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([0.0, 2.5]) | SHORT


OPERATORS = list(Condition.model_fields["operator"].annotation.__args__)  # type: ignore[union-attr]


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    operator = draw(st.sampled_from(OPERATORS))
    return {
        "attribute": draw(st.sampled_from(ATTRIBUTES)),
        "operator": operator,
        "value": draw(_condition_value(operator)),
    }


@st.composite
def rollouts(draw: st.DrawFn, kind: str, variants: list[str]) -> dict[str, Any]:
    bucket_by = draw(st.sampled_from(["sub", "user.country", "age"]))
    if kind == "boolean" and draw(st.booleans()):
        return {"percentage": draw(st.floats(0, 100)), "bucket_by": bucket_by}
    weights = draw(st.dictionaries(st.sampled_from(variants), st.integers(0, 5), min_size=1))
    if not sum(weights.values()):
        weights[variants[0]] = 1
    return {"weights": weights, "bucket_by": bucket_by}


@st.composite
def flags(draw: st.DrawFn, key: str) -> Flag:
    kind = draw(st.sampled_from(list(VALUES)))
    values = VALUES[kind]
    variants = (
        {"true": True, "false": False}
        if kind == "boolean"
        else draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), values, min_size=1))
    )
    names = list(variants)
    rules = [
        {
            "conditions": draw(st.lists(conditions(), max_size=2)),
            "segment": draw(st.none() | st.sampled_from(["seg", "unknown"])),
            "serve": draw(
                st.sampled_from(names).map(lambda v: {"variant": v})
                | rollouts(kind, names).map(lambda r: {"rollout": r})
            ),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    for rule in rules:
        if not rule["conditions"] and rule["segment"] is None:
            rule["segment"] = "seg"
    spec: dict[str, Any] = {
        "key": key,
        "type": kind,
        "enabled": draw(st.booleans()),
        "archived": draw(st.booleans()),
        "default": draw(values),
        "off": draw(st.none() | values),
        "variants": variants,
        "rules": rules,
        "targets": {
            "include": draw(st.lists(st.sampled_from(["alice", "bob", "7"]), max_size=2)),
            "exclude": draw(st.lists(st.sampled_from(["bob", "carol"]), max_size=2)),
            "variant": names[0] if kind != "boolean" else None,
            "attribute": draw(st.sampled_from(["sub", "user.country"])),
        },
        "rollout": draw(st.none() | rollouts(kind, names)),
        "prerequisites": [
            {"key": k, "variant": draw(st.sampled_from(["true", "false", "a"]))}
            for k in draw(st.lists(st.sampled_from([*FLAG_KEYS, "missing"]), max_size=2, unique=True))
            if k != key
        ],
    }
    return Flag(**META, **spec)


def _fits(flag: Flag, value: Any) -> bool:
    if flag.type == "boolean":
        return isinstance(value, bool)
    if flag.type == "string":
        return isinstance(value, str)
    if flag.type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, dict | list)


SEGMENT = Segment(key="seg", conditions=[{"attribute": "country", "operator": "in", "value": ["DE", "FR"]}])


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(*(flags(k) for k in FLAG_KEYS)), st.lists(CONTEXTS | st.none(), min_size=1, max_size=2))
def test_evaluate_never_raises_and_serves_the_flags_type(
    generated: tuple[Flag, ...], contexts: list[Any]
) -> None:
    snapshot = Snapshot.compile(generated, [SEGMENT])
    for context in contexts:
        for flag in generated:
            result = snapshot.evaluate(flag.key, context)
            assert result.reason in REASONS and result.key == flag.key
            assert result.reason != ERROR or "cycle" in (result.error or ""), result  # only cycles may err
            assert _fits(flag, result.value), (flag, result)
            if result.variant is not None:
                assert flag.variants[result.variant] == result.value
        assert snapshot.evaluate("missing", context, default=...) == (
            "missing",
            ...,
            None,
            NOT_FOUND,
            None,
            None,
        )
        assert len(snapshot.evaluate_all(context)) == sum(not f.archived for f in generated)


@settings(max_examples=200, deadline=None, database=None)
@given(conditions(), CONTEXTS)
def test_generated_rules_agree_with_the_closures(condition: dict[str, Any], context: dict[str, Any]) -> None:
    """Inlined operators (generated code) and the per-condition closures are two implementations: they agree."""
    rule = {"conditions": [condition], "serve": {"variant": "true"}}
    snapshot = Snapshot.compile(
        [Flag(key="f", type="boolean", enabled=True, default=False, rules=[rule], **META)]
    )
    inlined = snapshot.evaluate("f", context).reason == RULE_MATCH
    assert inlined is _compile_condition(Condition(**condition))(context)


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()), st.binary()))
def test_non_mapping_contexts_are_errors_not_exceptions(context: Any) -> None:
    snapshot = Snapshot.compile([Flag(key="f", type="boolean", enabled=True, default=True, **META)])
    result = snapshot.evaluate("f", context)
    assert result.value is True and result.reason in ("DEFAULT", ERROR)
