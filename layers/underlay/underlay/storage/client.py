"""The storage client: presigned uploads (POST policy) and downloads, delete and head on the `storage` bucket, and
`cdn_url` to turn a stored key into the URL a browser loads.

    from underlay.storage import cdn_url, object_key, storage

    key = object_key("avatars", user_id, "png", public=True)   # public/avatars/<id>.png
    upload = storage().presign_upload(key, "image/png")        # url + fields for a browser's form POST
    ...                                                          # store `key` on the user, never a URL
    cdn_url(user.avatar_key)                                   # https://<cdn>/public/avatars/<id>.png, or None

Nothing here talks to AWS to presign: URLs and policies are signed in process with the function's credentials,
so they are valid for at most as long as those are (a Lambda role's session, a few hours), whatever was asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload
from urllib.parse import quote

from underlay.errors import ConfigInvalidError, FieldError, ValidationFailedError
from underlay.storage.keys import parse_key
from underlay.storage.settings import MAX_PRESIGN_SECONDS, PUBLIC_PREFIX, StorageSettings

BUCKET = "storage"  # declaration.BUCKETS
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    """A browser POSTs `fields` and then the file (as the last form field, named `file`) to `url` as
    multipart/form-data. S3 refuses the upload (403) if the size is outside 1..`max_bytes`, the Content-Type
    differs, the key differs, or `expires_at` has passed."""

    url: str
    fields: dict[str, str]
    key: str
    content_type: str
    max_bytes: int
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "fields": self.fields,
            "key": self.key,
            "content_type": self.content_type,
            "max_bytes": self.max_bytes,
            "expires_at": self.expires_at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True, slots=True)
class PresignedDownload:
    url: str
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "expires_at": self.expires_at.isoformat().replace("+00:00", "Z")}


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None
    etag: str
    last_modified: datetime


class StorageClient:
    """Operations on the application bucket. Everything is resolved on use: `StorageClient()` costs nothing.

    `bucket`, `s3` and `settings` replace the configured bucket name, the shared boto3 client and
    `Settings.storage` (tests, a second bucket of your own).
    """

    def __init__(
        self, *, bucket: str | None = None, s3: Any = None, settings: StorageSettings | None = None
    ) -> None:
        self._bucket, self._s3, self._settings = bucket, s3, settings

    @property
    def settings(self) -> StorageSettings:
        if self._settings is not None:
            return self._settings
        from underlay.settings import get_settings

        return get_settings().storage

    @property
    def bucket(self) -> str:
        if self._bucket is not None:
            return self._bucket
        from underlay.settings import get_settings

        name = get_settings().resource("bucket", BUCKET)
        if not name:
            raise ConfigInvalidError(
                f"The {BUCKET} bucket is not configured for this function: declare a grant on it "
                f"(Grant('bucket', '{BUCKET}', ...)), which also sets its name."
            )
        return name

    @property
    def s3(self) -> Any:
        if self._s3 is not None:
            return self._s3
        from underlay.aws import client

        return client("s3")

    # --- presigning --------------------------------------------------------------------------------

    def presign_upload(
        self,
        key: str,
        content_type: str,
        *,
        max_bytes: int | None = None,
        expires_in: int | None = None,
    ) -> PresignedUpload:
        """A POST policy for one upload of `key`, with exactly `content_type` and 1..`max_bytes` bytes.

        The content type must be allowed for the key's kind, and `max_bytes` (default: the kind's limit) cannot
        exceed it; otherwise `ValidationFailedError` (422) on `content_type` or `max_bytes`. Public keys are
        stored with `storage.public_cache_control`.
        """
        config = self.settings
        parsed = parse_key(key, settings=config)
        content_type = content_type.strip().lower() if isinstance(content_type, str) else ""
        allowed = config.content_types_for(parsed.kind)
        if content_type not in allowed:
            message = (
                f"must be one of {', '.join(allowed)} for {parsed.kind}"
                if allowed
                else f"{parsed.kind} accepts no uploads"
            )
            raise ValidationFailedError(
                f"content_type: {message}", errors=[FieldError("content_type", message)]
            )
        limit = config.max_upload_bytes_for(parsed.kind)
        if max_bytes is not None:
            if not 1 <= max_bytes <= limit:
                message = f"must be between 1 and {limit} for {parsed.kind}"
                raise ValidationFailedError(
                    f"max_bytes: {message}", errors=[FieldError("max_bytes", message)]
                )
            limit = max_bytes
        expires = _expiry(expires_in, config.upload_expiry_seconds)
        fields = {"Content-Type": content_type}
        if parsed.public and config.public_cache_control:
            fields["Cache-Control"] = config.public_cache_control
        # boto3 adds the exact `bucket` and `key` conditions itself (`key` is never a starts-with here).
        conditions: list[Any] = [["content-length-range", 1, limit], *({k: v} for k, v in fields.items())]
        post = self.s3.generate_presigned_post(
            Bucket=self.bucket, Key=parsed.key, Fields=fields, Conditions=conditions, ExpiresIn=expires
        )
        return PresignedUpload(
            url=post["url"],
            fields=dict(post["fields"]),
            key=parsed.key,
            content_type=content_type,
            max_bytes=limit,
            expires_at=_now() + timedelta(seconds=expires),
        )

    def presign_download(
        self, key: str, *, filename: str | None = None, expires_in: int | None = None
    ) -> PresignedDownload:
        """A GET URL for `key`, valid `expires_in` seconds (default `storage.download_expiry_seconds`). With
        `filename`, browsers save the object under that name instead of showing it."""
        config = self.settings
        parsed = parse_key(key, settings=config)
        expires = _expiry(expires_in, config.download_expiry_seconds)
        params: dict[str, str] = {"Bucket": self.bucket, "Key": parsed.key}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        url = self.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)
        return PresignedDownload(url=url, expires_at=_now() + timedelta(seconds=expires))

    # --- objects ------------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        """What S3 knows about `key`, or None if there is no such object."""
        parsed = parse_key(key, settings=self.settings)
        from botocore.exceptions import ClientError
        from underlay.aws import error_code

        try:
            found = self.s3.head_object(Bucket=self.bucket, Key=parsed.key)
        except ClientError as error:
            if error_code(error) in _NOT_FOUND:
                return None
            raise
        return ObjectInfo(
            key=parsed.key,
            size=int(found["ContentLength"]),
            content_type=found.get("ContentType"),
            etag=str(found.get("ETag", "")).strip('"'),
            last_modified=found["LastModified"],
        )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def delete(self, key: str) -> None:
        """Delete `key` (no error if it is not there). The bucket is versioned: S3 keeps the previous version
        behind a delete marker until the bucket's lifecycle removes it."""
        parsed = parse_key(key, settings=self.settings)
        self.s3.delete_object(Bucket=self.bucket, Key=parsed.key)

    # --- URLs ---------------------------------------------------------------------------------------

    @overload
    def cdn_url(self, key: None) -> None: ...
    @overload
    def cdn_url(self, key: str) -> str: ...
    def cdn_url(self, key: str | None) -> str | None:
        """The URL that serves public `key`: `storage.cdn_base_url` + the key, or None for None.

        Only `public/` keys can be served (the CDN may read nothing else): another key is a
        `ValidationFailedError`; use `presign_download` for it. Without a CDN base the URL is the bucket's own
        (the endpoint's on the local stack), which only works where the bucket is readable.
        """
        if key is None:
            return None
        config = self.settings
        parsed = parse_key(key, settings=config)
        if not parsed.public:
            message = f"only '{PUBLIC_PREFIX}/' keys are served by the CDN; presign a download for others"
            raise ValidationFailedError(f"key: {message}", errors=[FieldError("key", message)])
        base = config.cdn_base_url or self._bucket_url()
        return f"{base}/{'/'.join(quote(segment, safe='') for segment in parsed.key.split('/'))}"

    def _bucket_url(self) -> str:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:  # moto server, MinIO: path style, as the client addresses it
            return f"{endpoint.rstrip('/')}/{self.bucket}"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com"


def content_disposition(filename: str) -> str:
    """`attachment` with `filename` as an ASCII fallback and, if needed, RFC 5987 UTF-8 (RFC 6266)."""
    cleaned = "".join(c for c in filename if c.isprintable() and c not in "\\/").strip() or "download"
    ascii_name = "".join(c if c.isascii() and c not in '"%;' else "_" for c in cleaned)
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != cleaned:
        value += f"; filename*=UTF-8''{quote(cleaned, safe='')}"
    return value


def _expiry(requested: int | None, default: int) -> int:
    if requested is None:
        return default
    if not 1 <= requested <= MAX_PRESIGN_SECONDS:
        message = f"must be between 1 and {MAX_PRESIGN_SECONDS} seconds"
        raise ValidationFailedError(f"expires_in: {message}", errors=[FieldError("expires_in", message)])
    return requested


def _now() -> datetime:
    return datetime.now(UTC)


_default: StorageClient | None = None


def storage() -> StorageClient:
    """The client for the configured `storage` bucket (it holds no state: settings and boto3 are read on use)."""
    global _default
    if _default is None:
        _default = StorageClient()
    return _default


@overload
def cdn_url(key: None) -> None: ...
@overload
def cdn_url(key: str) -> str: ...
def cdn_url(key: str | None) -> str | None:
    """The CDN URL of public `key`, None for None (see `StorageClient.cdn_url`)."""
    return None if key is None else storage().cdn_url(key)
