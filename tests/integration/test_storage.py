"""The storage client against moto: the POST policy's limits (decoded), presigned downloads, head and delete, CDN
URLs and their null safety; and a real browser-style round trip (form POST, then GET) through moto server."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from underlay import declaration
from underlay.errors import ConfigInvalidError, ValidationFailedError
from underlay.storage import cdn_url, object_key, storage
from underlay.storage.client import StorageClient, content_disposition

AVATAR = "public/avatars/01J0AVATAR.png"
INVOICE = "private/invoices/inv_42.pdf"


def _policy(fields: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(fields["policy"])))


def _bucket(env: dict[str, str]) -> str:
    return env[declaration.env_name("bucket", "storage")]


# --- presigned upload: the POST policy ----------------------------------------------------------


def test_the_post_policy_pins_bucket_key_content_type_and_size(aws: dict[str, str]) -> None:
    before = datetime.now(UTC)
    upload = storage().presign_upload(AVATAR, "image/png")

    policy = _policy(upload.fields)
    conditions = policy["conditions"]
    assert ["content-length-range", 1, 10 * 1024 * 1024] in conditions  # the default 10 MiB
    assert {"Content-Type": "image/png"} in conditions
    assert {"bucket": _bucket(aws)} in conditions
    assert {"key": AVATAR} in conditions  # exact: never a starts-with a client could widen
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in conditions)
    assert {"Cache-Control": "public, max-age=31536000, immutable"} in conditions  # public keys only
    assert upload.fields["key"] == AVATAR and upload.fields["Content-Type"] == "image/png"
    assert upload.fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"  # SigV4: SigV2 cannot write SSE-KMS objects
    expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert timedelta(seconds=890) <= expiration - before <= timedelta(seconds=905)  # the 900 s default
    assert upload.to_json()["max_bytes"] == 10 * 1024 * 1024
    assert upload.to_json()["expires_at"].endswith("Z")


def test_per_kind_limits_and_a_smaller_requested_maximum_go_into_the_policy(
    aws: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(
        "UNDERLAY_STORAGE__KINDS",
        json.dumps(
            {"avatars": {"max_upload_bytes": 1_048_576, "content_types": ["image/png", "image/webp"]}}
        ),
    )
    upload = storage().presign_upload(AVATAR, "IMAGE/WEBP", max_bytes=200_000, expires_in=60)
    conditions = _policy(upload.fields)["conditions"]
    assert ["content-length-range", 1, 200_000] in conditions
    assert {"Content-Type": "image/webp"} in conditions
    assert upload.max_bytes == 200_000

    private = storage().presign_upload(INVOICE, "application/pdf")  # another kind: the section's limits
    conditions = _policy(private.fields)["conditions"]
    assert ["content-length-range", 1, 10 * 1024 * 1024] in conditions
    assert not any("Cache-Control" in c for c in conditions if isinstance(c, dict))

    with pytest.raises(ValidationFailedError) as too_big:
        storage().presign_upload(AVATAR, "image/png", max_bytes=1_048_577)
    assert [e.field for e in too_big.value.errors] == ["max_bytes"]
    with pytest.raises(ValidationFailedError) as wrong_type:
        storage().presign_upload(AVATAR, "image/jpeg")  # allowed by default, not for avatars
    assert [e.field for e in wrong_type.value.errors] == ["content_type"]


@pytest.mark.parametrize(
    "content_type", ["text/html", "image/svg+xml", "application/octet-stream", "", "image/png; x=1"]
)
def test_content_types_outside_the_allowed_list_are_refused(aws: dict[str, str], content_type: str) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        storage().presign_upload(AVATAR, content_type)
    assert caught.value.status == 422
    assert [e.field for e in caught.value.errors] == ["content_type"]


@pytest.mark.parametrize("key", ["public/avatars/../x.png", "/etc/passwd", "public/avatars/a b.png"])
def test_every_operation_refuses_an_invalid_key_before_calling_s3(aws: dict[str, str], key: str) -> None:
    from underlay.aws import count_aws_calls
    from underlay.settings import get_settings

    client = storage()
    get_settings()  # a warm instance: the configuration is loaded
    with count_aws_calls() as calls:
        for call in (
            lambda: client.presign_upload(key, "image/png"),
            lambda: client.presign_download(key),
            lambda: client.head(key),
            lambda: client.delete(key),
            lambda: client.cdn_url(key),
        ):
            with pytest.raises(ValidationFailedError):
                call()
    assert calls.total == 0


def test_expiry_is_bounded(aws: dict[str, str]) -> None:
    for expires in (0, 604_801):
        with pytest.raises(ValidationFailedError, match="expires_in"):
            storage().presign_download(AVATAR, expires_in=expires)


# --- download, head, delete ---------------------------------------------------------------------


def test_presigned_download_head_and_delete(aws: dict[str, str]) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.put_object(Bucket=_bucket(aws), Key=INVOICE, Body=b"%PDF-1.7", ContentType="application/pdf")
    client = storage()

    download = client.presign_download(INVOICE, filename="Rechnung März.pdf", expires_in=120)
    query = parse_qs(urlsplit(download.url).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert query["response-content-disposition"] == [
        "attachment; filename=\"Rechnung M_rz.pdf\"; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf"
    ]
    assert urlsplit(download.url).path.endswith(f"/{INVOICE}")

    info = client.head(INVOICE)
    assert info is not None
    assert (info.size, info.content_type, info.key) == (8, "application/pdf", INVOICE)
    assert client.exists(INVOICE)
    assert client.head("private/invoices/missing.pdf") is None
    assert not client.exists("private/invoices/missing.pdf")

    client.delete(INVOICE)
    assert not client.exists(INVOICE)
    client.delete(INVOICE)  # deleting what is gone is not an error


def test_content_disposition_cannot_be_used_to_inject_header_parameters() -> None:
    value = content_disposition('evil"; filename="x.exe\r\n.pdf')
    assert value.count('"') == 2 and "\r" not in value and "\n" not in value
    assert content_disposition("report.csv") == 'attachment; filename="report.csv"'
    assert content_disposition("../../etc/passwd") == 'attachment; filename="....etcpasswd"'
    assert content_disposition("\x00") == 'attachment; filename="download"'


def test_a_function_without_the_bucket_gets_a_configuration_error(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigInvalidError, match="Grant\\('bucket', 'storage'"):
        storage().presign_upload(AVATAR, "image/png")


# --- CDN URLs -----------------------------------------------------------------------------------


def test_cdn_url_is_the_cdn_base_plus_the_key_and_none_for_none(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("UNDERLAY_STORAGE__CDN_BASE_URL", "https://d111111abcdef8.cloudfront.net/")
    assert cdn_url(None) is None
    assert storage().cdn_url(None) is None
    assert cdn_url(AVATAR) == f"https://d111111abcdef8.cloudfront.net/{AVATAR}"
    key = object_key("avatars", "01J0-x_Y", "webp", public=True)
    assert cdn_url(key) == "https://d111111abcdef8.cloudfront.net/public/avatars/01J0-x_Y.webp"


def test_cdn_url_refuses_private_and_invalid_keys(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("UNDERLAY_STORAGE__CDN_BASE_URL", "https://cdn.example.com/assets")
    with pytest.raises(ValidationFailedError, match="presign a download"):
        cdn_url(INVOICE)
    with pytest.raises(ValidationFailedError):
        cdn_url("public/avatars/../../private/invoices/inv_42.pdf")
    assert cdn_url(AVATAR) == f"https://cdn.example.com/assets/{AVATAR}"  # a base with a path keeps it


def test_without_a_cdn_the_url_is_the_buckets_own(aws: dict[str, str], clean_env: pytest.MonkeyPatch) -> None:
    bucket = _bucket(aws)
    clean_env.setenv("AWS_REGION", "eu-west-1")
    assert cdn_url(AVATAR) == f"https://{bucket}.s3.eu-west-1.amazonaws.com/{AVATAR}"
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566/")
    assert cdn_url(AVATAR) == f"http://127.0.0.1:4566/{bucket}/{AVATAR}"  # the local stack: path style
    assert StorageClient(bucket="mine").cdn_url(AVATAR) == f"http://127.0.0.1:4566/mine/{AVATAR}"


# --- a browser's round trip through moto server -------------------------------------------------


@pytest.fixture
def moto_server(clean_env: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    from infra.local.stack import AwsService, _reset_process_caches

    aws = AwsService()
    aws.start()
    try:
        for name, value in {**aws.names, "AWS_ENDPOINT_URL": aws.endpoint}.items():
            clean_env.setenv(name, value)
        _reset_process_caches()
        yield {**aws.names, "AWS_ENDPOINT_URL": aws.endpoint}
    finally:
        aws.stop()
        _reset_process_caches()


def _form_post(url: str, fields: dict[str, str], body: bytes, content_type: str) -> int:
    """POST a multipart form as a browser does: the policy's fields, then the file last."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="upload"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url,
        data=b"".join(parts),
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_browser_uploads_with_the_policy_and_downloads_with_the_url(moto_server: dict[str, str]) -> None:
    """moto server checks neither signatures nor policy conditions (the decoded-policy tests above cover those);
    this proves the fields and URLs themselves work end to end: form POST, stored metadata, GET, delete."""
    client = storage()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
    upload = client.presign_upload(AVATAR, "image/png")
    assert upload.url.startswith(moto_server["AWS_ENDPOINT_URL"])
    assert _form_post(upload.url, upload.fields, png, "image/png") == 204

    info = client.head(AVATAR)
    assert info is not None and info.size == len(png) and info.content_type == "image/png"
    stored = boto3.client(
        "s3", endpoint_url=moto_server["AWS_ENDPOINT_URL"], region_name="us-east-1"
    ).head_object(Bucket=client.bucket, Key=AVATAR)
    assert stored["CacheControl"] == "public, max-age=31536000, immutable"

    status, headers, body = _get(client.presign_download(AVATAR, filename="me.png").url)
    assert (status, body) == (200, png)
    assert headers["Content-Disposition"] == 'attachment; filename="me.png"'
    status, _, body = _get(cdn_url(AVATAR))  # no CDN locally: the bucket's own URL, which moto serves
    assert (status, body) == (200, png)

    client.delete(AVATAR)
    assert _get(client.presign_download(AVATAR).url)[0] == 404


def test_locally_as_on_aws_only_public_keys_are_served_without_a_signature(
    moto_server: dict[str, str],
) -> None:
    client = storage()
    pdf = b"%PDF-1.7 secret"
    upload = client.presign_upload(INVOICE, "application/pdf")
    assert _form_post(upload.url, upload.fields, pdf, "application/pdf") == 204
    endpoint = moto_server["AWS_ENDPOINT_URL"]
    assert _get(f"{endpoint}/{client.bucket}/{INVOICE}")[0] == 403  # what cdn_url would give, were it allowed
    assert _get(client.presign_download(INVOICE).url)[::2] == (200, pdf)
