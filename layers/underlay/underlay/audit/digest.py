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


# KMS errors that mean "this signature cannot be ours": a bad signature, or a malformed one.
_INVALID = ("KMSInvalidSignatureException", "ValidationException")
# With no configured key, errors about the key a digest names: a key we cannot use does not vouch for it.
_UNUSABLE_KEY = (
    "NotFoundException",
    "AccessDeniedException",
    "DisabledException",
    "InvalidKeyUsageException",
    "KMSInvalidStateException",
    "InvalidArnException",
    "IncorrectKeyException",
)


def check(body: bytes) -> tuple[dict[str, Any], bool]:
    """(the digest, whether its KMS signature is valid).

    The signature is verified with OUR key, `audit.signing_key_id`, never with a key the digest names: anyone who
    can write to the bucket can sign a digest with a key of their own. A digest naming another key is invalid (no
    KMS call), as is a malformed one; a digest signed before the key was changed is invalid too, so write a new
    digest (job `audit.digest`) right after changing keys. KMS errors about our own key (disabled, no access,
    throttled) are raised: they are our problem, not the digest's. Without a configured key (local, dev), the key
    the digest names is used, and any error about that key makes the digest invalid.
    """
    from botocore.exceptions import BotoCoreError, ClientError
    from underlay.aws import client
    from underlay.settings import get_settings

    parsed: Any = None
    try:
        parsed = json.loads(body)
        digest = parsed["digest"]
        signature = base64.b64decode(parsed["signature"], validate=True)
        named = digest["key_id"]
        if not isinstance(digest["seq"], int) or isinstance(digest["seq"], bool):
            raise TypeError("seq")
    except (ValueError, KeyError, TypeError):
        return _unreadable(parsed), False
    ours = get_settings().audit.signing_key_id
    if ours and named != ours:
        return digest, False
    if digest.get("algorithm") != ALGORITHM or not signature:
        return digest, False
    try:
        valid = bool(
            client("kms").verify(
                KeyId=ours or named,
                Message=_message(digest),
                MessageType="DIGEST",
                Signature=signature,
                SigningAlgorithm=ALGORITHM,
            )["SignatureValid"]
        )
    except ClientError as error:  # KMS answers an invalid signature with an error, not just False
        code = error.response.get("Error", {}).get("Code", "")
        if code in _INVALID or (not ours and code in _UNUSABLE_KEY):
            return digest, False
        raise
    except BotoCoreError as error:  # e.g. a signature of the wrong size, refused before it is sent
        if "ParamValidation" not in type(error).__name__:
            raise
        return digest, False
    return digest, valid


def _unreadable(parsed: Any) -> dict[str, Any]:
    """A stand-in for a digest that cannot be read, so that verify reports it as `digest_invalid`."""
    digest = parsed.get("digest") if isinstance(parsed, dict) else None
    digest = digest if isinstance(digest, dict) else {}
    seq = digest.get("seq")
    return {
        **digest,
        "seq": seq if isinstance(seq, int) else 0,
        "hash": str(digest.get("hash", "")),
        "created_at": digest.get("created_at"),
    }
