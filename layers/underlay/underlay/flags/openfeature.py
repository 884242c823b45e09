"""An OpenFeature provider over the flag engine: `api.set_provider(UnderlayProvider(lambda: client.snapshot()))`.

The provider asks its callable for the current `Snapshot` on every resolution, so whoever refreshes snapshots
(the flags client) stays in charge of freshness. The evaluation context maps to the engine's: its attributes,
and `targeting_key` as `sub` (it wins over a `sub` attribute). Reasons map to OpenFeature's: `TARGET_MATCH` and
`RULE_MATCH` are `TARGETING_MATCH`, `ARCHIVED` is `DISABLED`, `PREREQUISITE_FAILED` is kept as a provider reason;
the engine's own reason and rule index are in `flag_metadata`. A missing flag is `FLAG_NOT_FOUND`, a value of
another type than asked `TYPE_MISMATCH` (the caller's default is served), an engine error `GENERAL`.
Needs `openfeature-sdk`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata
from underlay.flags import engine
from underlay.flags.engine import Snapshot

T = TypeVar("T")
_REASONS: dict[str, str] = {
    engine.TARGET_MATCH: Reason.TARGETING_MATCH,
    engine.RULE_MATCH: Reason.TARGETING_MATCH,
    engine.SPLIT: Reason.SPLIT,
    engine.DEFAULT: Reason.DEFAULT,
    engine.DISABLED: Reason.DISABLED,
    engine.ARCHIVED: Reason.DISABLED,
    engine.PREREQUISITE_FAILED: engine.PREREQUISITE_FAILED,
}


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping | list)


class UnderlayProvider(AbstractProvider):
    def __init__(self, snapshot: Callable[[], Snapshot], *, name: str = "underlay") -> None:
        super().__init__()
        self._snapshot = snapshot
        self._name = name

    def get_metadata(self) -> Metadata:
        return Metadata(name=self._name)

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_int)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        details = self._resolve(flag_key, default_value, evaluation_context, _is_number)
        if details.error_code is None:
            details.value = float(details.value)  # a number flag may hold an int; the client checks for float
        return details

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_object)

    def _resolve(
        self, key: str, default: T, context: EvaluationContext | None, fits: Callable[[Any], bool]
    ) -> FlagResolutionDetails[T]:
        try:
            snapshot = self._snapshot()
        except Exception as exc:
            return FlagResolutionDetails(
                default, ErrorCode.PROVIDER_NOT_READY, f"no flag snapshot: {exc}", Reason.ERROR
            )
        attributes: dict[str, Any] = dict(context.attributes) if context else {}
        if context and context.targeting_key:
            attributes["sub"] = context.targeting_key
        result = snapshot.evaluate(key, attributes, default)
        if result.reason == engine.NOT_FOUND:
            return FlagResolutionDetails(
                default, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found", Reason.ERROR
            )
        metadata: dict[str, str | int] = {"reason": result.reason, "snapshot": snapshot.version}
        if result.rule_index is not None:
            metadata["rule_index"] = result.rule_index
        if result.reason == engine.ERROR:
            return FlagResolutionDetails(
                default, ErrorCode.GENERAL, result.error, Reason.ERROR, flag_metadata=metadata
            )
        if not fits(result.value):
            message = f"flag {key!r} serves {type(result.value).__name__}, asked for {type(default).__name__}"
            return FlagResolutionDetails(
                default, ErrorCode.TYPE_MISMATCH, message, Reason.ERROR, flag_metadata=metadata
            )
        return FlagResolutionDetails(
            result.value, reason=_REASONS[result.reason], variant=result.variant, flag_metadata=metadata
        )
