"""Signed cursors: a round trip works; a forged, edited or foreign cursor is a 400, never a silent page."""

from __future__ import annotations

from decimal import Decimal

import pytest
from underlay import pagination
from underlay.errors import ConfigInvalidError, InvalidCursorError

pytestmark = pytest.mark.usefixtures("clean_env")


def test_round_trip_keeps_the_position_and_turns_decimals_into_numbers() -> None:
    position = {"pk": "FLAG#a", "sk": "v", "seq": Decimal("42"), "score": Decimal("1.5")}
    cursor = pagination.encode(position, "flags")
    assert cursor is not None and "FLAG" not in cursor  # opaque, not readable JSON
    assert pagination.decode(cursor, "flags") == {"pk": "FLAG#a", "sk": "v", "seq": 42, "score": 1.5}


def test_end_of_list_has_no_cursor() -> None:
    assert pagination.encode(None, "flags") is None
    assert pagination.encode({}, "flags") is None


@pytest.mark.parametrize(
    "forge",
    [
        lambda c: "A" + c[1:],  # payload edited
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # tag edited
        lambda c: c.split(".")[0],  # tag removed
        lambda c: "not-a-cursor",
        lambda c: "%%%.%%%",
        lambda c: "",
    ],
)
def test_a_forged_cursor_is_refused(forge) -> None:  # type: ignore[no-untyped-def]
    cursor = pagination.encode({"pk": "a"}, "flags")
    assert cursor is not None
    with pytest.raises(InvalidCursorError) as caught:
        pagination.decode(forge(cursor), "flags")
    assert caught.value.status == 400 and caught.value.code == "INVALID_CURSOR"


def test_a_cursor_cannot_be_replayed_on_another_list() -> None:
    cursor = pagination.encode({"pk": "a"}, "audit:user=alice")
    assert cursor is not None
    with pytest.raises(InvalidCursorError):
        pagination.decode(cursor, "audit:user=mallory")


def test_the_configured_secret_signs(clean_env: pytest.MonkeyPatch) -> None:
    dev_cursor = pagination.encode({"pk": "a"}, "x")
    clean_env.setenv("UNDERLAY_HTTP__CURSOR_SECRET", "s3cret-for-tests")
    from infra.local.stack import _reset_process_caches

    _reset_process_caches()
    assert dev_cursor is not None
    with pytest.raises(InvalidCursorError):  # signed with the dev key, so not valid under the real one
        pagination.decode(dev_cursor, "x")


def test_outside_dev_a_missing_key_is_config_invalid(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("UNDERLAY_STAGE", "prod")
    with pytest.raises(ConfigInvalidError):
        pagination.encode({"pk": "a"}, "x")
