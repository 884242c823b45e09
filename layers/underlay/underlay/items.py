"""Plain values ⇄ DynamoDB attribute values, for the low-level client (no boto3 resource layer: it costs cold
start, and Decimal round trips would change what the audit chain hashes).

Strings, ints and bools only, which is all Underlay stores at the top level; nested data is stored as JSON text.
`None` is left out of an item (DynamoDB has no use for it here).
"""

from __future__ import annotations

from typing import Any


def attr(value: str | int | bool) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    return {"S": str(value)}


def to_item(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: attr(value) for name, value in fields.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, typed in item.items():
        ((kind, value),) = typed.items()
        if kind == "N":
            out[name] = int(value) if value.lstrip("-").isdigit() else float(value)
        elif kind in ("S", "BOOL"):
            out[name] = value
        elif kind == "L":
            out[name] = [from_item({"v": v})["v"] for v in value]
        elif kind != "NULL":
            raise ValueError(f"unsupported attribute type {kind} for {name}")
    return out


def equals_filter(wanted: dict[str, str], names: dict[str, str], values: dict[str, Any]) -> str | None:
    """A FilterExpression that every `attribute == value` of `wanted` holds (names and values are added to the
    request's maps), or None when there is nothing to filter on."""
    parts = []
    for n, (name, value) in enumerate(sorted(wanted.items())):
        names[f"#f{n}"], values[f":f{n}"] = name, {"S": value}
        parts.append(f"#f{n} = :f{n}")
    return " AND ".join(parts) or None
