"""Storage keys and settings: the key convention, what validation refuses (examples and generated input), and the
settings section's checks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from underlay.errors import ValidationFailedError
from underlay.settings import Settings
from underlay.storage.keys import ObjectKey, object_key, parse_key, validate_key
from underlay.storage.settings import StorageSettings

CONFIG = StorageSettings()
# What a path-traversal or injection attempt looks like in a key.
TRICKY = (
    "",
    "public",
    "public/",
    "public/avatars/",
    "../public/avatars/a.png",
    "public/../private/x/a.png",
    "public/avatars/../a.png",
    "public/./avatars/a.png",
    "./public/avatars/a.png",
    "public/avatars/..",
    "public/avatars/a..png",
    "public/avatars/.hidden.png",
    "public/avatars/a.png.",
    "/public/avatars/a.png",
    "public//avatars/a.png",
    "public/avatars//a.png",
    "public/avatars/a.png/",
    "public\\avatars\\a.png",
    "public/avatars/a\\..\\b.png",
    "public/avatars/a\x00.png",
    "public/avatars/a\r\nX-Header: 1.png",
    "public/avatars/a\x7f.png",
    "public/avatars/a%2e%2e.png",
    "public/avatars/a b.png",
    "public/avatars/a?.png",
    "public/avatars/a#b.png",
    "public/avatars/é.png",
    "public/avatars/a.PNG",
    "public/avatars/a",
    "public/avatars/.png",
    "public/Avatars/a.png",
    "public/avatars/sub/a.png",
    "private/../../etc/passwd.txt",
    "uploads/avatars/a.png",
    "PUBLIC/avatars/a.png",
    "s3://bucket/public/avatars/a.png",
    "https://cdn.example.com/public/avatars/a.png",
)


@pytest.mark.parametrize("key", TRICKY)
def test_tricky_keys_are_refused_with_a_422_on_the_field(key: str) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        validate_key(key, field="avatar_key", settings=CONFIG)
    assert caught.value.status == 422
    assert [e.field for e in caught.value.errors] == ["avatar_key"]
    if len(key) > len("public/"):
        assert key not in caught.value.detail  # the key itself is never echoed


@pytest.mark.parametrize("value", [None, 42, b"public/avatars/a.png", ["public/avatars/a.png"]])
def test_a_key_that_is_not_a_string_is_refused(value: object) -> None:
    with pytest.raises(ValidationFailedError):
        validate_key(value, settings=CONFIG)


def test_object_key_follows_the_convention_and_validates() -> None:
    assert (
        object_key("avatars", "01J0ABCDEF", "png", public=True, settings=CONFIG)
        == "public/avatars/01J0ABCDEF.png"
    )
    assert object_key("invoices", "inv_42", ".PDF", settings=CONFIG) == "private/invoices/inv_42.pdf"
    key = object_key("invoices", "inv_42", "pdf", settings=CONFIG.model_copy(update={"key_prefix": "app/v2"}))
    assert key == "app/v2/invoices/inv_42.pdf"
    assert parse_key(key, settings=CONFIG.model_copy(update={"key_prefix": "app/v2"})) == ObjectKey(
        "app/v2", "invoices", "inv_42", "pdf"
    )
    parsed = parse_key("public/avatars/01J0ABCDEF.png", settings=CONFIG)
    assert parsed.public and parsed.kind == "avatars" and parsed.key == "public/avatars/01J0ABCDEF.png"
    assert not parse_key("private/invoices/inv_42.pdf", settings=CONFIG).public


@pytest.mark.parametrize(
    ("kind", "id_", "ext", "field"),
    [
        ("Avatars", "a", "png", "kind"),
        ("ava/tars", "a", "png", "kind"),
        ("", "a", "png", "kind"),
        ("avatars", "../a", "png", "id"),
        ("avatars", "a.b", "png", "id"),
        ("avatars", "", "png", "id"),
        ("avatars", "a" * 256, "png", "id"),
        ("avatars", "a", "p/ng", "ext"),
        ("avatars", "a", "", "ext"),
        ("avatars", "a", "tar.gz", "ext"),
    ],
)
def test_object_key_names_the_bad_part(kind: str, id_: str, ext: str, field: str) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        object_key(kind, id_, ext, settings=CONFIG)
    assert [e.field for e in caught.value.errors] == [field]


def test_the_length_limit_counts_bytes_and_is_configurable() -> None:
    at_limit = "public/a/" + "x" * (1024 - len("public/a/.png")) + ".png"
    assert len(at_limit) == 1024
    small = CONFIG.model_copy(update={"max_key_bytes": 64})
    with pytest.raises(ValidationFailedError, match="at most 64 bytes"):
        validate_key("public/avatars/" + "x" * 50 + ".png", settings=small)
    with pytest.raises(ValidationFailedError, match="at most 1024 bytes"):
        validate_key("public/a/" + "x" * 1100 + ".png", settings=CONFIG)
    with pytest.raises(ValidationFailedError, match="at most 64 bytes"):
        object_key("avatars", "x" * 60, "png", settings=small)


# --- generated input ------------------------------------------------------------------------------

SAFE_KEY = re.compile(r"[A-Za-z0-9_./-]+")


@given(st.text(max_size=80) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_any_accepted_key_is_safe(key: str) -> None:
    """Whatever the input, an accepted key is plain ASCII with no traversal and the convention's shape."""
    try:
        parsed = parse_key(key, settings=CONFIG)
    except ValidationFailedError:
        return
    assert SAFE_KEY.fullmatch(key)
    segments = key.split("/")
    assert "" not in segments and not any(s.startswith(".") or ".." in s for s in segments)
    assert parsed.key == key and len(segments) == 3


PART = st.text(alphabet="ab.-_/\\\x00 é%Z9", min_size=0, max_size=6)


@given(
    st.lists(
        st.sampled_from(["public", "private", "avatars", "..", ".", "", "a.png", "x"]) | PART, max_size=6
    )
)
def test_keys_built_from_traversal_pieces_are_accepted_only_when_safe(parts: list[str]) -> None:
    key = "/".join(parts)
    try:
        validate_key(key, settings=CONFIG)
    except ValidationFailedError:
        return
    assert SAFE_KEY.fullmatch(key) and "/../" not in f"/{key}/" and "/./" not in f"/{key}/"
    assert key.startswith(("public/", "private/"))


@given(
    st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    st.from_regex(r"[a-zA-Z0-9]{1,8}", fullmatch=True),
    st.booleans(),
)
def test_every_key_object_key_builds_validates_and_parses_back(
    kind: str, id_: str, ext: str, public: bool
) -> None:
    key = object_key(kind, id_, ext, public=public, settings=CONFIG)
    assert parse_key(key, settings=CONFIG) == ObjectKey(
        "public" if public else "private", kind, id_, ext.lower()
    )


# --- settings -----------------------------------------------------------------------------------


def test_settings_read_the_storage_section_from_the_environment() -> None:
    from underlay.settings import env_source

    settings = Settings.model_validate(
        env_source(
            {
                "UNDERLAY_STORAGE__CDN_BASE_URL": "https://d111.cloudfront.net/",
                "UNDERLAY_STORAGE__MAX_UPLOAD_BYTES": "2048",
                "UNDERLAY_STORAGE__KINDS": '{"avatars": {"max_upload_bytes": 1024, "content_types": ["Image/PNG"]}}',
            }
        )
    )
    storage = settings.storage
    assert storage.cdn_base_url == "https://d111.cloudfront.net"  # the trailing slash goes
    assert storage.max_upload_bytes_for("avatars") == 1024
    assert storage.max_upload_bytes_for("documents") == 2048
    assert storage.content_types_for("avatars") == ["image/png"]
    assert "image/svg+xml" not in storage.content_types_for("documents")  # script in an image: not by default


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"cdn_base_url": "ftp://cdn.example.com"}, "cdn_base_url"),
        ({"cdn_base_url": "https://cdn.example.com/?v=1"}, "cdn_base_url"),
        ({"cdn_base_url": "https://cdn.example.com/#x"}, "cdn_base_url"),
        ({"cdn_base_url": "https://user:pw@cdn.example.com"}, "cdn_base_url"),
        ({"key_prefix": "public"}, "key_prefix"),
        ({"key_prefix": "public/inner"}, "key_prefix"),
        ({"key_prefix": "../up"}, "key_prefix"),
        ({"key_prefix": "/abs"}, "key_prefix"),
        ({"max_key_bytes": 2048}, "max_key_bytes"),
        ({"max_upload_bytes": 0}, "max_upload_bytes"),
        ({"max_upload_bytes": 6 * 1024**3}, "max_upload_bytes"),
        ({"content_types": ["image/png; charset=x"]}, "content_types"),
        ({"kinds": {"Avatars": {}}}, "kinds"),
        ({"kinds": {"avatars": {"max_uploads": 1}}}, "kinds"),
        ({"upload_expiry_seconds": 604_801}, "upload_expiry_seconds"),
        ({"public_cache_control": "max-age=1\r\nX: y"}, "public_cache_control"),
    ],
)
def test_bad_storage_settings_name_the_field(section: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"storage": section})
    assert any(e["loc"][:2] == ("storage", field) for e in caught.value.errors()), caught.value.errors()
