"""Error fingerprints: the same error with other ids is one group; another type, message or frame is another."""

from __future__ import annotations

import pytest
from underlay.admin.errors import normalize, occurrence, top_frame, type_name


def _raise(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


def _lookup(job_id: str) -> BaseException:
    return _raise(KeyError(f"job {job_id} not found"))


def _other_place(job_id: str) -> BaseException:
    return _raise(KeyError(f"job {job_id} not found"))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("job 01J9ZK3M4N5P6Q7R8S9T0V1W2X not found", "job <id> not found"),
        ("user 3f1c2b7e-9a0d-4c1b-8e2f-5a6b7c8d9e0f gone", "user <uuid> gone"),
        ("object at 0x7f3a2b1c9d80 and hash deadbeef12", "object at <hex> and hash <hex>"),
        ("took 1234 ms over 3.5 s on shard 7", "took <n> ms over <n> s on shard <n>"),
        ("unknown key 'alice@example.com' in \"prod\"", "unknown key <str> in <str>"),
        ("line one\n   line two", "line one line two"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer [REDACTED]"),
    ],
)
def test_normalize_replaces_the_variable_parts(message: str, expected: str) -> None:
    assert normalize(message) == expected


def test_plain_words_that_look_like_hex_stay() -> None:
    assert normalize("cafe facade decade accessed") == "cafe facade decade accessed"


def test_normalize_bounds_the_message() -> None:
    assert len(normalize("x" * 5000)) == 200


def test_same_error_with_other_ids_is_one_group() -> None:
    a = occurrence(_lookup("01J9ZK3M4N5P6Q7R8S9T0V1W2X"), "GET /v1/jobs/{id}", "c1")
    b = occurrence(_lookup("01K0AB3M4N5P6Q7R8S9T0V1W2Y"), "GET /v1/jobs/{id}", "c2")
    assert a.fingerprint == b.fingerprint
    assert a.message == "<str>"  # KeyError's str() quotes its argument
    assert a.frame.endswith("test_admin_fingerprint.py:_raise")


def test_type_message_and_frame_each_split_groups() -> None:
    base = occurrence(_raise(ValueError("bad 1")), "s", "c")
    assert occurrence(_raise(TypeError("bad 1")), "s", "c").fingerprint != base.fingerprint
    assert occurrence(_raise(ValueError("worse 1")), "s", "c").fingerprint != base.fingerprint

    def elsewhere() -> BaseException:
        try:
            raise ValueError("bad 2")
        except ValueError as caught:
            return caught

    other = occurrence(elsewhere(), "s", "c")
    assert other.message == base.message and other.frame != base.frame
    assert other.fingerprint != base.fingerprint


def test_the_top_frame_is_the_innermost_one() -> None:
    def inner() -> None:
        raise RuntimeError("deep")

    def outer() -> None:
        inner()

    try:
        outer()
    except RuntimeError as error:
        assert top_frame(error) == "unit/test_admin_fingerprint.py:inner"
    assert top_frame(RuntimeError("never raised")) == "?"


def test_type_names_are_qualified_outside_builtins() -> None:
    from underlay.errors import NotFoundError

    assert type_name(ValueError()) == "ValueError"
    assert type_name(NotFoundError("x")) == "underlay.errors.NotFoundError"
    assert type_name(_other_place("1")) == "KeyError"
