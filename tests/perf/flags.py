"""Feature flag evaluation benchmarks, in process (no store, no network).

- `flags.eval_us.rules_10`: one `Snapshot.evaluate` of a boolean flag with 10 rules (13 conditions: eq, in,
  ends_with, starts_with, gt, lt, contains on a list) and a 25% rollout. Every context misses every rule, so each
  evaluation checks all of them and then buckets; the contexts are 1,000 different users, cycled.
- `flags.ratio_vs_powertools`: Powertools `FeatureFlags.evaluate` time ÷ ours, on the same contexts, interleaved
  rounds, median of the per-round ratios. Powertools reads the equivalent schema from an in-memory
  `StoreProvider` (it validates a schema once per object, so this measures evaluation only). It has no percentage
  rollout: its closest equivalent is an 11th rule with `MODULO_RANGE` (`user_num % 100` in 0..24) on a numeric
  attribute each context carries, which is cheaper than hashing, so the ratio flatters Powertools a little.
- `flags.evaluate_all_us.100`: one `evaluate_all` over 100 mixed flags (boolean, string, number and json; rules,
  segments, targets, splits, prerequisites, disabled ones).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from tests.perf.registry import Figures, Target, benchmark, row

ROUNDS, USERS = 15, 1000
_META = {"salt": "bench", "version": 1, "created_at": "2026-01-01T00:00:00Z", "created_by": "bench"}
_META |= {"updated_at": "2026-01-01T00:00:00Z", "updated_by": "bench"}

# (attribute, our operator, Powertools action, value); each inner list is one rule, its conditions ANDed.
RULES: list[list[tuple[str, str, str, Any]]] = [
    [("country", "in", "IN", ["US", "CA", "MX"])],
    [("tier", "eq", "EQUALS", "premium")],
    [("email", "ends_with", "ENDSWITH", "@underlay.dev")],
    [("seats", "gt", "KEY_GREATER_THAN_VALUE", 100)],
    [("sub", "starts_with", "STARTSWITH", "admin-")],
    [("country", "eq", "EQUALS", "DE"), ("tier", "eq", "EQUALS", "enterprise")],
    [("age_days", "lt", "KEY_LESS_THAN_VALUE", 7), ("region", "eq", "EQUALS", "us-east-1")],
    [("org", "in", "IN", ["globex", "initech", "umbrella"])],
    [("region", "starts_with", "STARTSWITH", "ap-"), ("beta", "eq", "EQUALS", True)],
    [("roles", "contains", "VALUE_IN_KEY", "admin")],
]


def _contexts() -> list[dict[str, Any]]:
    return [
        {
            "sub": f"user-{i:06d}",
            "user_num": i,
            "country": "DE",
            "tier": "free",
            "email": f"user{i}@example.org",
            "seats": 3,
            "age_days": 40 + i % 300,
            "region": "eu-west-1",
            "org": "acme",
            "beta": False,
            "roles": ["viewer", "editor"],
        }
        for i in range(USERS)
    ]


def _rules_10_flag() -> Any:
    from underlay.flags.model import Flag

    rules = [
        {
            "conditions": [{"attribute": a, "operator": op, "value": v} for a, op, _, v in rule],
            "serve": {"variant": "true"},
        }
        for rule in RULES
    ]
    return Flag(
        key="rules-10",
        type="boolean",
        enabled=True,
        default=False,
        rules=rules,
        rollout={"percentage": 25},
        **_META,
    )


def _powertools(contexts: list[dict[str, Any]]) -> Any:
    from aws_lambda_powertools.utilities.feature_flags import FeatureFlags
    from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

    rules: dict[str, Any] = {
        f"rule {i}": {
            "when_match": True,
            "conditions": [{"action": act, "key": a, "value": v} for a, _, act, v in rule],
        }
        for i, rule in enumerate(RULES)
    }
    rules["rollout 25%"] = {
        "when_match": True,
        "conditions": [
            {"action": "MODULO_RANGE", "key": "user_num", "value": {"BASE": 100, "START": 0, "END": 24}}
        ],
    }
    schema = {"rules-10": {"default": False, "rules": rules}}

    class InMemoryStore(StoreProvider):
        @property
        def get_raw_configuration(self) -> dict[str, Any]:
            return schema

        def get_configuration(self) -> dict[str, Any]:
            return schema

    flags = FeatureFlags(store=InMemoryStore())
    served = sum(flags.evaluate(name="rules-10", context=c, default=False) for c in contexts)
    assert served == len(contexts) // 4, served  # no rule matches; the modulo rule serves a quarter
    return flags


def _rules_10() -> tuple[float, float]:
    from underlay.flags.engine import SPLIT, Snapshot

    contexts = _contexts()
    snapshot = Snapshot.compile([_rules_10_flag()], version="bench")
    results = [snapshot.evaluate("rules-10", c) for c in contexts]
    assert all(r.reason == SPLIT for r in results), {
        r.reason for r in results
    }  # every rule checked, then split
    assert 0.2 < sum(r.value for r in results) / len(results) < 0.3
    theirs = _powertools(contexts).evaluate
    ours = snapshot.evaluate
    ratios, ours_us, theirs_us = [], [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for c in contexts:
            ours("rules-10", c)
        mine = time.perf_counter() - started
        started = time.perf_counter()
        for c in contexts:
            theirs(name="rules-10", context=c, default=False)
        other = time.perf_counter() - started
        ratios.append(other / mine)
        ours_us.append(mine / len(contexts) * 1e6)
        theirs_us.append(other / len(contexts) * 1e6)
    row("ours, 10 rules (us)", ours_us)
    row("powertools (us)", theirs_us)
    return round(statistics.median(ours_us), 3), round(statistics.median(ratios), 2)


def _mixed_flags(count: int) -> tuple[list[Any], list[Any]]:
    """`count` flags cycling through the shapes a real catalogue has."""
    from underlay.flags.model import Flag, Segment

    segments = [
        Segment(
            key="eu",
            conditions=[{"attribute": "country", "operator": "in", "value": ["DE", "FR", "IT", "ES"]}],
        ),
        Segment(
            key="staff",
            conditions=[{"attribute": "email", "operator": "ends_with", "value": "@underlay.dev"}],
        ),
    ]
    flags = []
    for i in range(count):
        key, shape = f"flag-{i:03d}", i % 10
        base: dict[str, Any] = {"key": key, **_META}
        if shape == 0:  # kill switch, no targeting
            spec: dict[str, Any] = {"type": "boolean", "enabled": True, "default": True}
        elif shape == 1:  # disabled
            spec = {"type": "boolean", "enabled": False, "default": False}
        elif shape == 2:  # percentage rollout
            spec = {
                "type": "boolean",
                "enabled": True,
                "default": False,
                "rollout": {"percentage": 10 * (i % 9)},
            }
        elif shape == 3:  # segment rule, then rollout
            spec = {
                "type": "boolean",
                "enabled": True,
                "default": False,
                "rules": [{"segment": "staff", "serve": {"variant": "true"}}],
                "rollout": {"percentage": 50},
            }
        elif shape == 4:  # targets
            spec = {
                "type": "boolean",
                "enabled": True,
                "default": False,
                "targets": {
                    "include": [f"user-{j:06d}" for j in range(0, 200, 7)],
                    "exclude": ["user-000001"],
                },
            }
        elif shape == 5:  # multivariate split
            spec = {
                "type": "string",
                "enabled": True,
                "default": "control",
                "variants": {"control": "control", "a": "blue", "b": "green"},
                "rollout": {"weights": {"control": 50, "a": 25, "b": 25}},
            }
        elif shape == 6:  # string flag, rules on version and region
            spec = {
                "type": "string",
                "enabled": True,
                "default": "v1",
                "variants": {"v1": "v1", "v2": "v2"},
                "rules": [
                    {
                        "conditions": [
                            {"attribute": "app_version", "operator": "semver_gte", "value": "3.0.0"}
                        ],
                        "serve": {"variant": "v2"},
                    },
                    {
                        "segment": "eu",
                        "conditions": [{"attribute": "tier", "operator": "eq", "value": "premium"}],
                        "serve": {"variant": "v2"},
                    },
                ],
            }
        elif shape == 7:  # number flag
            spec = {
                "type": "number",
                "enabled": True,
                "default": 20,
                "variants": {"low": 20, "high": 100},
                "rules": [
                    {
                        "conditions": [{"attribute": "seats", "operator": "gte", "value": 50}],
                        "serve": {"variant": "high"},
                    }
                ],
            }
        elif shape == 8:  # json flag, regex rule
            spec = {
                "type": "json",
                "enabled": True,
                "default": {"layout": "list"},
                "variants": {"list": {"layout": "list"}, "grid": {"layout": "grid", "columns": 3}},
                "rules": [
                    {
                        "conditions": [
                            {"attribute": "user.agent", "operator": "regex", "value": "Mobile|Android"}
                        ],
                        "serve": {"variant": "grid"},
                    }
                ],
            }
        else:  # prerequisite on the previous kill switch
            spec = {
                "type": "boolean",
                "enabled": True,
                "default": False,
                "prerequisites": [{"key": f"flag-{i - 9:03d}", "variant": "true"}],
                "rollout": {"percentage": 30},
            }
        flags.append(Flag(**base, **spec))
    return flags, segments


def _evaluate_all(count: int) -> float:
    from underlay.flags.engine import ERROR, Snapshot

    flags, segments = _mixed_flags(count)
    snapshot = Snapshot.compile(flags, segments, version="bench")
    contexts = _contexts()[:200]
    for c in contexts:
        c["app_version"] = "2.9.1"
        c["user"] = {"agent": "Mozilla/5.0 (iPhone) Mobile"}
    assert not [e for e in snapshot.evaluate_all(contexts[0]) if e.reason == ERROR]
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for c in contexts:
            snapshot.evaluate_all(c)
        samples.append((time.perf_counter() - started) / len(contexts) * 1e6)
    row(f"evaluate_all {count} (us)", samples)
    return round(statistics.median(samples), 1)


@benchmark(
    "flags",
    targets=(Target("flags.eval_us.rules_10", "<=", 3), Target("flags.ratio_vs_powertools", ">=", 10)),
)
def flags_benchmarks() -> Figures:
    eval_us, ratio = _rules_10()
    figures = {
        "flags.eval_us.rules_10": eval_us,
        "flags.ratio_vs_powertools": ratio,
        "flags.evaluate_all_us.100": _evaluate_all(100),
    }
    print(f"  {figures}", file=sys.stderr)
    return figures


@benchmark("flags_client", targets=(Target("aws_calls.flag_warm_eval", "<=", 0),))
def flags_client_benchmarks() -> Figures:
    """`aws_calls.flag_warm_eval`: AWS calls per evaluation through the process's refreshing client once it holds
    a snapshot (moto server; the stamp check is in Redis, and not due within the run)."""
    import os

    from infra.local.stack import RedisProcess
    from tests.perf.fixtures import moto_stack

    with RedisProcess() as url, moto_stack():
        os.environ["UNDERLAY_REDIS__URL"] = url
        os.environ["UNDERLAY_FLAGS__REFRESH_SECONDS"] = "60"
        try:
            from underlay import flags
            from underlay.aws import count_aws_calls
            from underlay.flags import service

            from infra.local.stack import _reset_process_caches

            _reset_process_caches()
            service.create(_rules_10_flag_spec(), "bench")
            client = flags.client()
            client.evaluate("rules-10", {"sub": "u0"})  # cold: loads the snapshot
            with count_aws_calls() as calls:
                for n in range(1000):
                    client.evaluate("rules-10", {"sub": f"u{n}", "country": "XX"})
                per_eval = calls.total / 1000
        finally:
            os.environ.pop("UNDERLAY_REDIS__URL", None)
            os.environ.pop("UNDERLAY_FLAGS__REFRESH_SECONDS", None)
        return {"aws_calls.flag_warm_eval": per_eval}


def _rules_10_flag_spec() -> Any:
    from underlay.flags.model import FlagSpec

    flag = _rules_10_flag()
    return FlagSpec.model_validate(flag.model_dump(include=set(FlagSpec.model_fields)) | {"key": "rules-10"})
