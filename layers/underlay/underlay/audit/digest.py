"""Signed digests of the chain head, like CloudTrail's digest files.

The hourly `audit.digest` job signs the head (seq, hash) with a KMS asymmetric key (ECDSA P-256) and writes the
digest to the audit bucket under S3 Object Lock in COMPLIANCE mode, so not even the account root can remove it
before its retention ends. Each digest names the previous one and its SHA-256, so the digests form a chain too:
removing the newest entries (and rewinding the head) is caught, because the latest digest still names them.

Keys are `digests/main/<10^13 - epoch ms>-<ulid>.json`, so a one-key listing finds the newest digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from underlay.audit.chain import CHAIN, AuditChain, canonical_json
from underlay.ids import ulid

PREFIX = f"digests/{CHAIN}/"
ALGORITHM = "ECDSA_SHA_256"
_INVERT = 10**13


def _bucket() -> str:
    from underlay.errors import ConfigInvalidError
    from underlay.settings import get_settings

    bucket = get_settings().resource("bucket", "audit")
    if not bucket:
        raise ConfigInvalidError("The audit bucket is not configured for this function.")
    return bucket


def latest() -> tuple[str, bytes] | None:
    """(key, body) of the newest digest, or None before the first one."""
    from underlay.aws import client

    s3 = client("s3")
    listed = s3.list_objects_v2(Bucket=_bucket(), Prefix=PREFIX, MaxKeys=1).get("Contents", [])
    if not listed:
        return None
    key = listed[0]["Key"]
    return key, s3.get_object(Bucket=_bucket(), Key=key)["Body"].read()


def _message(digest: dict[str, Any]) -> bytes:
    return hashlib.sha256(canonical_json(digest).encode()).digest()


def create(writer: AuditChain, *, now: datetime | None = None) -> dict[str, Any] | None:
    """Sign the current head and store the digest; None if the head has not moved since the last digest."""
    from underlay.aws import client
    from underlay.errors import ConfigInvalidError
    from underlay.settings import get_settings

    settings = get_settings().audit
    if not settings.signing_key_id:
        raise ConfigInvalidError("No audit signing key is configured (audit.signing_key_id).")
    head = writer.read_head()
    previous = latest()
    if previous is not None:
        last = json.loads(previous[1])["digest"]
        if last["seq"] == head.seq and last["hash"] == head.hash:
            return None
    moment = now or datetime.now(UTC)
    digest = {
        "chain": CHAIN,
        "seq": head.seq,
        "hash": head.hash,
        "created_at": moment.isoformat(timespec="milliseconds"),
        "previous": None
        if previous is None
        else {"key": previous[0], "sha256": hashlib.sha256(previous[1]).hexdigest()},
        "key_id": settings.signing_key_id,
        "algorithm": ALGORITHM,
    }
    signature = client("kms").sign(
        KeyId=settings.signing_key_id,
        Message=_message(digest),
        MessageType="DIGEST",
        SigningAlgorithm=ALGORITHM,
    )["Signature"]
    body = canonical_json({"digest": digest, "signature": base64.b64encode(signature).decode()}).encode()
    ms = int(moment.timestamp() * 1000)
    key = f"{PREFIX}{_INVERT - ms:013d}-{ulid(ms)}.json"
    client("s3").put_object(
        Bucket=_bucket(),
        Key=key,
        Body=body,
        ContentType="application/json",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=moment + timedelta(days=settings.digest_retention_days),
        ChecksumAlgorithm="SHA256",  # Object Lock puts need an integrity checksum
    )
    return {"key": key, **digest}


def check(body: bytes) -> tuple[dict[str, Any], bool]:
    """(the digest, whether its KMS signature is valid)."""
    from underlay.aws import client

    parsed = json.loads(body)
    digest = parsed["digest"]
    try:
        valid = bool(
            client("kms").verify(
                KeyId=digest["key_id"],
                Message=_message(digest),
                MessageType="DIGEST",
                Signature=base64.b64decode(parsed["signature"]),
                SigningAlgorithm=digest["algorithm"],
            )["SignatureValid"]
        )
    except Exception as error:  # KMS answers an invalid signature with an error, not just False
        if "KMSInvalidSignature" not in type(error).__name__ and "InvalidSignature" not in str(error):
            raise
        valid = False
    return digest, valid
