"""Storage settings (`UNDERLAY_STORAGE__...`), a section of `underlay.settings.Settings`.

UNDERLAY_STORAGE__CDN_BASE_URL=https://d111111abcdef8.cloudfront.net   (set by CDK when the stage has a CDN)
UNDERLAY_STORAGE__MAX_UPLOAD_BYTES=10485760
UNDERLAY_STORAGE__KINDS='{"avatars": {"max_upload_bytes": 1048576, "content_types": ["image/png"]}}'
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

PUBLIC_PREFIX = "public"  # the only prefix the CDN may read (infra/constructs/storage_cdn.py)
S3_MAX_KEY_BYTES = 1024
# One key segment: dots only between other characters (no '.', '..', hidden or trailing-dot segment).
SEGMENT = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
KIND = r"[a-z0-9][a-z0-9_-]{0,62}"
# S3 accepts at most 5 GB in one POST upload.
S3_MAX_POST_BYTES = 5 * 1024**3
# SigV4 presigned URLs and POST policies are valid for at most 7 days.
MAX_PRESIGN_SECONDS = 604_800
# `type/subtype`, lowercase, without parameters: S3 stores it as is and the POST policy matches it exactly.
CONTENT_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# http(s), a host without credentials, an optional path; no query or fragment (keys are appended to it).
CDN_BASE_RE = re.compile(r"https?://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?")

# Formats browsers render without running code. SVG and HTML are left out on purpose: served from the CDN, an
# uploaded one could run script on the CDN's origin.
DEFAULT_CONTENT_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/avif",
    "application/pdf",
)


def _content_types(value: list[str]) -> list[str]:
    normalised = [v.strip().lower() for v in value]
    bad = [v for v in normalised if not CONTENT_TYPE_RE.fullmatch(v)]
    if bad:
        raise ValueError(f"content types must be 'type/subtype' without parameters, got {bad}")
    return normalised


class StorageKind(BaseModel):
    """Upload limits for one kind of object (the `{kind}` in its key); unset fields use the section's."""

    model_config = ConfigDict(extra="forbid")

    max_upload_bytes: int | None = Field(default=None, ge=1, le=S3_MAX_POST_BYTES)
    content_types: list[str] | None = None

    @field_validator("content_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _content_types(value)


class StorageSettings(BaseModel):
    """The storage client (issue 8): the application bucket, its CDN, upload limits and presign lifetimes."""

    # Where public keys are served from. Unset (dev, a stage without `cdn`), `cdn_url` falls back to the bucket's
    # own URL, which works on the local stack but not for the private bucket on AWS.
    cdn_base_url: str | None = None
    # The prefix of keys the CDN does not serve (reachable through presigned downloads only).
    key_prefix: str = "private"
    max_key_bytes: int = Field(default=S3_MAX_KEY_BYTES, ge=32, le=S3_MAX_KEY_BYTES)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1, le=S3_MAX_POST_BYTES)
    content_types: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTENT_TYPES))
    kinds: dict[str, StorageKind] = Field(default_factory=dict)
    upload_expiry_seconds: int = Field(default=900, ge=1, le=MAX_PRESIGN_SECONDS)
    download_expiry_seconds: int = Field(default=3600, ge=1, le=MAX_PRESIGN_SECONDS)
    # Stored with public uploads (browsers and the CDN keep them): keys name one version of an object for good.
    public_cache_control: str | None = Field(
        default="public, max-age=31536000, immutable", max_length=256, pattern=r"^[\x20-\x7e]+$"
    )

    @field_validator("cdn_base_url")
    @classmethod
    def _cdn_base(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not CDN_BASE_RE.fullmatch(value):
            raise ValueError("must be an http(s) URL without credentials, query or fragment")
        return value.rstrip("/")

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(rf"{SEGMENT}(?:/{SEGMENT})*", value):
            raise ValueError("must be path segments of letters, digits, '_', '-' and inner dots")
        if value == PUBLIC_PREFIX or value.startswith(PUBLIC_PREFIX + "/"):
            raise ValueError(f"must not be '{PUBLIC_PREFIX}': that prefix is the one the CDN serves")
        return value

    @field_validator("content_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        return _content_types(value)

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: dict[str, StorageKind]) -> dict[str, StorageKind]:
        bad = sorted(k for k in value if not re.fullmatch(KIND, k))
        if bad:
            raise ValueError(f"kinds must be lowercase letters, digits, '_' and '-': {', '.join(bad)}")
        return value

    def max_upload_bytes_for(self, kind: str) -> int:
        found = self.kinds.get(kind)
        return found.max_upload_bytes if found and found.max_upload_bytes else self.max_upload_bytes

    def content_types_for(self, kind: str) -> list[str]:
        found = self.kinds.get(kind)
        return found.content_types if found and found.content_types is not None else self.content_types
