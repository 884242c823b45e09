"""A local JWT issuer: an RSA key kept under `.underlay/`, its JWKS, and tokens minted with it.

`make dev` serves the JWKS at `/.well-known/jwks.json`; `make token` mints tokens the running stack accepts,
because both read the same key file.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_ISSUER = "https://issuer.underlay.local"
DEFAULT_AUDIENCE = "underlay"
ALL_SCOPES_DEFAULT = ("platform:read",)


def state_dir() -> Path:
    return Path(os.environ.get("UNDERLAY_DEV_HOME", ".underlay"))


class LocalIssuer:
    def __init__(
        self, key_file: Path | None = None, *, issuer: str = DEFAULT_ISSUER, audience: str = DEFAULT_AUDIENCE
    ):
        self.key_file = key_file or state_dir() / "issuer-key.pem"
        self.issuer, self.audience = issuer, audience
        self._key = self._load_or_create()
        public = self._key.public_key()
        self._jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        self.kid = jwt.PyJWK(self._jwk).key_id or self._thumbprint()
        self._jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})

    def _load_or_create(self) -> rsa.RSAPrivateKey:
        if self.key_file.exists():
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            if isinstance(key, rsa.RSAPrivateKey):
                return key
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.key_file.write_bytes(pem)
        self.key_file.chmod(0o600)
        return key

    def _thumbprint(self) -> str:
        import base64
        import hashlib

        canonical = json.dumps(
            {k: self._jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True
        )
        return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk]}

    def mint(
        self,
        *,
        sub: str = "dev-user",
        scopes: tuple[str, ...] | list[str] = ALL_SCOPES_DEFAULT,
        tier: str | None = None,
        ttl_seconds: int = 3600,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": str(uuid.uuid4()),
            "scope": " ".join(scopes),
        }
        if tier:
            payload["tier"] = tier
        payload.update(claims)
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return self._key
