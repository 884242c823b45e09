"""Object keys: `{prefix}/{kind}/{id}.{ext}`, built by `object_key` and checked by `validate_key`.

Apps store keys, never URLs: a key names the object wherever it is served from (`cdn_url`, a presigned
download). Two prefixes exist. `public/` is what the CDN may serve (the CloudFront distribution can read nothing
else in the bucket); the private prefix (`storage.key_prefix`, default `private`) is reachable only through
presigned downloads.

A valid key is safe to hand to S3, to put in a URL and to write to a file system: ASCII letters, digits, `_`,
`-` and `.` between characters only (so no `.`/`..` segment, no `./`, no hidden or trailing-dot names), `/`
between segments only (no leading `/`, no `//`), no backslash or control character, a lowercase extension, and
at most `storage.max_key_bytes` bytes (S3's own limit is 1024).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from underlay.errors import FieldError, ValidationFailedError
from underlay.storage.settings import KIND, PUBLIC_PREFIX, StorageSettings

__all__ = ["PUBLIC_PREFIX", "ObjectKey", "object_key", "parse_key", "validate_key"]

KIND_RE = re.compile(KIND)
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")
EXT_RE = re.compile(r"[a-z0-9]{1,16}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


class ObjectKey(NamedTuple):
    """A validated key's parts. `public` keys are the ones the CDN serves."""

    prefix: str
    kind: str
    id: str
    ext: str

    @property
    def key(self) -> str:
        return f"{self.prefix}/{self.kind}/{self.id}.{self.ext}"

    @property
    def public(self) -> bool:
        return self.prefix == PUBLIC_PREFIX


def _storage_settings(settings: StorageSettings | None) -> StorageSettings:
    if settings is not None:
        return settings
    from underlay.settings import get_settings

    return get_settings().storage


def _invalid(field: str, message: str) -> ValidationFailedError:
    return ValidationFailedError(f"{field}: {message}", errors=[FieldError(field, message)])


def object_key(
    kind: str, id: str, ext: str, *, public: bool = False, settings: StorageSettings | None = None
) -> str:
    """The key of object `id` of `kind` (`avatars`, `invoices`): `public/avatars/01J….png` with `public=True`,
    else under the private prefix. `ext` may come with a dot or in capitals (`.PNG` becomes `png`).

    Raises `ValidationFailedError` (422) naming `kind`, `id` or `ext` when one cannot be part of a key.
    """
    config = _storage_settings(settings)
    ext = ext.removeprefix(".").lower() if isinstance(ext, str) else ext
    for field, value, pattern, rule in (
        ("kind", kind, KIND_RE, "lowercase letters, digits, '_' and '-', at most 63 characters"),
        ("id", id, ID_RE, "letters, digits, '_' and '-', at most 255 characters"),
        ("ext", ext, EXT_RE, "letters and digits, at most 16 characters"),
    ):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _invalid(field, f"must be {rule}")
    prefix = PUBLIC_PREFIX if public else config.key_prefix
    return validate_key(f"{prefix}/{kind}/{id}.{ext}", settings=config)


def parse_key(key: object, *, field: str = "key", settings: StorageSettings | None = None) -> ObjectKey:
    """The parts of a key, if it is a valid `{prefix}/{kind}/{id}.{ext}` key; otherwise `ValidationFailedError`
    (422) on `field` saying what is wrong (never echoing the key)."""
    if not isinstance(key, str) or not key:
        raise _invalid(field, "must be a non-empty string")
    config = _storage_settings(settings)
    if len(key.encode("utf-8")) > config.max_key_bytes:
        raise _invalid(field, f"must be at most {config.max_key_bytes} bytes")
    if _UNSAFE.search(key):
        raise _invalid(field, "must not contain control characters or backslashes")
    if key.startswith("/") or "//" in key or key.endswith("/"):
        raise _invalid(field, "must not start or end with '/' or contain '//'")
    if any(segment in (".", "..") or segment.startswith(".") for segment in key.split("/")):
        raise _invalid(field, "must not contain '.' or '..' segments")
    if not key.isascii():
        raise _invalid(field, "must be ASCII")
    for prefix in (PUBLIC_PREFIX, config.key_prefix):
        if key.startswith(prefix + "/"):
            rest = key[len(prefix) + 1 :]
            break
    else:
        raise _invalid(field, f"must start with '{PUBLIC_PREFIX}/' or '{config.key_prefix}/'")
    kind, _, name = rest.partition("/")
    id_, _, ext = name.rpartition(".")
    if not KIND_RE.fullmatch(kind) or not ID_RE.fullmatch(id_) or not EXT_RE.fullmatch(ext):
        raise _invalid(
            field,
            "must be '{prefix}/{kind}/{id}.{ext}': a lowercase kind, an id of letters, digits, '_' and '-', "
            "and a lowercase extension",
        )
    return ObjectKey(prefix, kind, id_, ext)


def validate_key(key: object, *, field: str = "key", settings: StorageSettings | None = None) -> str:
    """`key` itself if it is a valid object key (see the module docstring); otherwise `ValidationFailedError`
    (422) on `field`. Use it on every key that comes from a request before touching S3 with it."""
    return parse_key(key, field=field, settings=settings).key
