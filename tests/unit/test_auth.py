"""The token matrix: every way a token can be wrong gets its own code, and nothing else gets through."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from underlay import auth
from underlay.auth_settings import AuthSettings

from tests.conftest import REPO

SETTINGS = AuthSettings(jwks_refresh_interval_seconds=60)


class CountingJwks:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0

    def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        return self.document


@pytest.fixture
def jwks(issuer: Any) -> CountingJwks:
    return CountingJwks(issuer.jwks())


@pytest.fixture
def verifier(jwks: CountingJwks) -> auth.TokenVerifier:
    return auth.TokenVerifier(SETTINGS, auth.JwksCache(SETTINGS, fetch=jwks))


def _rejected(verifier: auth.TokenVerifier, token: str) -> str:
    with pytest.raises(auth.TokenRejected) as caught:
        verifier.verify(token)
    return caught.value.code


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token_yields_identity(issuer: Any, verifier: auth.TokenVerifier) -> None:
    token = issuer.mint(
        sub="alice", scopes=["flags:read", "cache:admin"], tier="premium", tenant="t1", roles=["ops"]
    )
    identity = verifier.verify(token)
    assert identity.sub == "alice"
    assert identity.scopes == {"flags:read", "cache:admin"}
    assert (identity.tier, identity.tenant, identity.roles) == ("premium", "t1", ("ops",))
    assert identity.context() == {
        "sub": "alice",
        "scopes": "cache:admin flags:read",
        "tier": "premium",
        "tenant": "t1",
        "roles": "ops",
    }


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"exp": int(time.time()) - 120}, "TOKEN_EXPIRED"),
        ({"nbf": int(time.time()) + 600}, "TOKEN_NOT_YET_VALID"),
        ({"iat": int(time.time()) + 600}, "TOKEN_NOT_YET_VALID"),
        ({"iss": "https://evil.example"}, "TOKEN_INVALID_ISSUER"),
        ({"aud": "someone-else"}, "TOKEN_INVALID_AUDIENCE"),
    ],
)
def test_claims_are_checked(
    issuer: Any, verifier: auth.TokenVerifier, claims: dict[str, Any], code: str
) -> None:
    assert _rejected(verifier, issuer.mint(**claims)) == code


def test_leeway_accepts_a_token_just_expired(issuer: Any, verifier: auth.TokenVerifier) -> None:
    token = issuer.mint(exp=int(time.time()) - 10)  # within the 30 s leeway
    assert verifier.verify(token).sub == "dev-user"


def test_missing_required_claim(issuer: Any, verifier: auth.TokenVerifier) -> None:
    now = int(time.time())
    token = jwt.encode(
        {"iss": SETTINGS.issuer, "aud": SETTINGS.audience, "iat": now, "exp": now + 60},
        issuer.private_key,
        algorithm="RS256",
        headers={"kid": issuer.kid},
    )
    assert _rejected(verifier, token) == "TOKEN_INVALID"


def test_alg_none_is_rejected(issuer: Any, verifier: auth.TokenVerifier) -> None:
    payload = jwt.decode(issuer.mint(), options={"verify_signature": False})
    token = f"{_b64({'alg': 'none', 'kid': issuer.kid})}.{_b64(payload)}."
    assert _rejected(verifier, token) == "TOKEN_ALGORITHM_REJECTED"


def test_hs256_signed_with_the_public_key_is_rejected(issuer: Any, verifier: auth.TokenVerifier) -> None:
    public_pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    payload = jwt.decode(issuer.mint(), options={"verify_signature": False})
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": issuer.kid})
    body = _b64(payload)
    import hashlib
    import hmac

    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert _rejected(verifier, token) == "TOKEN_ALGORITHM_REJECTED"


def test_bad_signature(issuer: Any, verifier: auth.TokenVerifier) -> None:
    header, _, signature = issuer.mint(sub="alice").split(".")
    forged = _b64({**jwt.decode(issuer.mint(), options={"verify_signature": False}), "sub": "admin"})
    assert _rejected(verifier, f"{header}.{forged}.{signature}") == "TOKEN_INVALID_SIGNATURE"


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "", "eyJhbGciOiJSUzI1NiJ9..."])
def test_garbage(verifier: auth.TokenVerifier, garbage: str) -> None:
    assert _rejected(verifier, garbage) in {"TOKEN_MALFORMED", "TOKEN_UNKNOWN_KEY"}


def test_unexpected_typ_is_rejected(issuer: Any, verifier: auth.TokenVerifier) -> None:
    token = jwt.encode(
        jwt.decode(issuer.mint(), options={"verify_signature": False}),
        issuer.private_key,
        algorithm="RS256",
        headers={"kid": issuer.kid, "typ": "id_token+weird"},
    )
    assert _rejected(verifier, token) == "TOKEN_TYPE_REJECTED"


def test_unknown_kid_refreshes_at_most_once_per_interval(
    issuer: Any, verifier: auth.TokenVerifier, jwks: CountingJwks
) -> None:
    verifier.verify(issuer.mint())
    assert jwks.fetches == 1
    stranger = ec.generate_private_key(ec.SECP256R1())
    for _ in range(5):
        token = jwt.encode({"sub": "x"}, stranger, algorithm="ES256", headers={"kid": "rotated-later"})
        assert _rejected(verifier, token) == "TOKEN_UNKNOWN_KEY"
    assert jwks.fetches == 1  # the keys were fetched under a minute ago: unknown kids cannot force refreshes


def test_rotation_picks_up_a_new_key_after_the_interval(issuer: Any, jwks: CountingJwks) -> None:
    settings = AuthSettings(jwks_refresh_interval_seconds=1)
    verifier = auth.TokenVerifier(settings, auth.JwksCache(settings, fetch=jwks))
    verifier.verify(issuer.mint())
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(new_key.public_key()))
    new_jwk.update({"kid": "es-2", "alg": "ES256", "use": "sig"})
    now = int(time.time())
    claims = {"iss": settings.issuer, "aud": settings.audience, "sub": "bob", "iat": now, "exp": now + 60}
    token = jwt.encode(claims, new_key, algorithm="ES256", headers={"kid": "es-2"})
    jwks.document = {"keys": [*jwks.document["keys"], new_jwk]}
    time.sleep(1.05)
    assert verifier.verify(token).sub == "bob"  # ES256 from the allowlist, found after one refresh


def test_a_key_whose_alg_differs_from_the_token_is_rejected(issuer: Any, jwks: CountingJwks) -> None:
    jwks.document["keys"][0]["alg"] = "ES256"  # the JWKS pins this kid to ES256
    verifier = auth.TokenVerifier(SETTINGS, auth.JwksCache(SETTINGS, fetch=jwks))
    assert _rejected(verifier, issuer.mint()) in {"TOKEN_ALGORITHM_REJECTED", "TOKEN_UNKNOWN_KEY"}


def test_unreachable_jwks_means_unknown_key_without_hammering_it(issuer: Any) -> None:
    attempts = []

    def down() -> dict[str, Any]:
        attempts.append(1)
        raise OSError("connection refused")

    verifier = auth.TokenVerifier(SETTINGS, auth.JwksCache(SETTINGS, fetch=down))
    for _ in range(3):
        assert _rejected(verifier, issuer.mint()) == "TOKEN_UNKNOWN_KEY"
    assert len(attempts) == 1


def _authorizer_event(route_key: str, token: str | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return {"version": "2.0", "type": "REQUEST", "routeKey": route_key, "headers": headers}


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch, verifier: auth.TokenVerifier) -> None:
    monkeypatch.setattr(auth, "_verifier", verifier)


@pytest.mark.usefixtures("wired")
def test_authorize_passes_identity_for_the_routes_scope(issuer: Any) -> None:
    decision = auth.authorize(
        _authorizer_event("GET /v1/health/details", issuer.mint(scopes=["platform:read"]))
    )
    assert decision["isAuthorized"] is True
    assert decision["context"]["sub"] == "dev-user"
    assert "auth_error" not in decision["context"]


@pytest.mark.usefixtures("wired")
def test_authorize_reports_a_missing_scope_as_403(issuer: Any) -> None:
    decision = auth.authorize(_authorizer_event("GET /v1/health/details", issuer.mint(scopes=["flags:read"])))
    assert decision["context"]["auth_error"] == "INSUFFICIENT_SCOPE"
    assert decision["context"]["auth_status"] == 403
    assert "sub" not in decision["context"]


@pytest.mark.usefixtures("wired")
def test_admin_scope_implies_every_scope(issuer: Any) -> None:
    decision = auth.authorize(
        _authorizer_event("GET /v1/health/details", issuer.mint(scopes=["platform:admin"]))
    )
    assert decision["context"]["sub"] == "dev-user"


@pytest.mark.usefixtures("wired")
def test_authorize_without_token_and_on_undeclared_routes(issuer: Any) -> None:
    assert (
        auth.authorize(_authorizer_event("GET /v1/health/details", None))["context"]["auth_error"]
        == "TOKEN_MISSING"
    )
    undeclared = auth.authorize(_authorizer_event("GET /v1/secret", issuer.mint(scopes=["platform:admin"])))
    assert undeclared["isAuthorized"] is False


def test_bearer_token_parsing() -> None:
    assert auth.bearer_token({"Authorization": "Bearer abc"}) == "abc"
    assert auth.bearer_token({"authorization": "bearer  abc "}) == "abc"
    assert auth.bearer_token({"authorization": "Basic abc"}) is None
    assert auth.bearer_token({}) is None


def test_auth_settings_from_env_and_validation() -> None:
    loaded = AuthSettings.from_env(
        {"UNDERLAY_AUTH__ALGORITHMS": "RS256", "UNDERLAY_AUTH__LEEWAY_SECONDS": "5"}
    )
    assert (loaded.algorithms, loaded.leeway_seconds) == (["RS256"], 5)
    with pytest.raises(ValueError, match=r"auth\.algorithms"):
        AuthSettings.from_env({"UNDERLAY_AUTH__ALGORITHMS": '["HS256"]'})


def test_authorizer_never_imports_boto3_or_pydantic() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import functions.authorizer.app; "
        "from underlay.auth import verifier; verifier(); "
        "print(sorted(m for m in ('boto3', 'botocore', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
