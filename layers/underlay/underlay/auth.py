"""JWT verification for the HTTP API Lambda REQUEST authorizer (payload 2.0, simple responses).

- Algorithms from an allowlist (RS256, ES256); `alg: none` and every HS* algorithm are rejected before any key
  is looked at, so an HS256 token "signed" with the public key never verifies.
- JWKS from the configured URL, cached; an unknown `kid` triggers at most one refresh per interval (rotation).
- `iss`, `aud`, `exp`, `nbf`, `iat` with leeway; `typ` checked when present; `sub` required.
- The route's scope comes from the declaration, looked up by `routeKey` (an identity source, so a cached
  decision never crosses routes).

A rejected token does not end the request here: the decision goes to the function as `auth_error`, and the
HTTP layer answers it with problem+json (401 with `WWW-Authenticate`, or 403), which an HTTP API deny cannot
do. The HTTP layer refuses the request before any route runs. A route that is not declared is denied outright.

This module must not import boto3 or pydantic: it is the authorizer's whole cold start.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from typing import Any, NamedTuple

import jwt
from underlay import declaration
from underlay.auth_settings import AuthSettings

_ALLOWED_TYP = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})


class TokenRejected(Exception):
    def __init__(self, code: str, detail: str, status: int = 401) -> None:
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, status


class JwksCache:
    """JWKS keys by `kid`, refreshed when stale, or on an unknown kid at most once per interval."""

    def __init__(self, settings: AuthSettings, fetch: Any = None) -> None:
        self._settings = settings
        self._fetch = fetch or self._fetch_url
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._last_attempt = float("-inf")
        self._lock = threading.Lock()

    def _fetch_url(self) -> dict[str, Any]:
        request = urllib.request.Request(self._settings.jwks_url, headers={"Accept": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=self._settings.jwks_timeout_seconds) as response:  # noqa: S310
            return json.loads(response.read())  # type: ignore[no-any-return]

    def _refresh(self, now: float) -> None:
        self._last_attempt = now
        document = self._fetch()
        keys: dict[str, jwt.PyJWK] = {}
        for data in document.get("keys", []):
            kid = data.get("kid")
            if not kid or data.get("use", "sig") != "sig":
                continue
            try:
                keys[kid] = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue  # a key we cannot use (unsupported kty/alg) is skipped, not fatal
        self._keys = keys
        self._fetched_at = now

    def get(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        with self._lock:
            stale = now - self._fetched_at > self._settings.jwks_cache_seconds
            unknown = kid not in self._keys
            # With no keys at all (JWKS down at cold start) retry sooner, but never on every request.
            interval = (
                self._settings.jwks_refresh_interval_seconds
                if self._keys
                else min(5, self._settings.jwks_refresh_interval_seconds)
            )
            if (stale or unknown) and now - self._last_attempt >= interval:
                with contextlib.suppress(OSError, ValueError):  # keep the keys we have
                    self._refresh(now)
            return self._keys.get(kid)


class Identity(NamedTuple):
    sub: str
    scopes: frozenset[str]
    tier: str
    tenant: str
    roles: tuple[str, ...]

    def context(self) -> dict[str, str]:
        return {
            "sub": self.sub,
            "scopes": " ".join(sorted(self.scopes)),
            "tier": self.tier,
            "tenant": self.tenant,
            "roles": ",".join(self.roles),
        }


class TokenVerifier:
    def __init__(self, settings: AuthSettings, jwks: JwksCache | None = None) -> None:
        self.settings = settings
        self.jwks = jwks or JwksCache(settings)

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected("TOKEN_MALFORMED", "The token is not a well-formed JWT.") from exc
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            raise TokenRejected("TOKEN_ALGORITHM_REJECTED", f"The algorithm {alg!r} is not accepted.")
        typ = header.get("typ")
        if typ is not None and str(typ).lower() not in _ALLOWED_TYP:
            raise TokenRejected("TOKEN_TYPE_REJECTED", f"The token type {typ!r} is not accepted.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("TOKEN_UNKNOWN_KEY", "The token names no key (kid).")
        key = self.jwks.get(kid)
        if key is None:
            raise TokenRejected("TOKEN_UNKNOWN_KEY", "The token was signed with an unknown key.")
        if key.algorithm_name and key.algorithm_name != alg:
            raise TokenRejected("TOKEN_ALGORITHM_REJECTED", "The token's algorithm does not match its key.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[str(alg)],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("TOKEN_EXPIRED", "The token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected("TOKEN_NOT_YET_VALID", "The token is not valid yet.") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("TOKEN_INVALID_ISSUER", "The token was issued by an unknown issuer.") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("TOKEN_INVALID_AUDIENCE", "The token is not meant for this API.") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("TOKEN_INVALID_SIGNATURE", "The token's signature does not verify.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("TOKEN_INVALID", f"The token lacks the claim '{exc.claim}'.") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected("TOKEN_INVALID", "The token is not valid.") from exc
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        raw_scope = claims.get("scope", "")
        scopes = raw_scope.split() if isinstance(raw_scope, str) else [str(s) for s in raw_scope or []]
        raw_roles = claims.get(self.settings.roles_claim, [])
        roles = raw_roles.split(",") if isinstance(raw_roles, str) else [str(r) for r in raw_roles or []]
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise TokenRejected("TOKEN_INVALID", "The token's subject is empty.")
        return Identity(
            sub=sub,
            scopes=frozenset(scopes),
            tier=str(claims.get(self.settings.tier_claim) or "free"),
            tenant=str(claims.get(self.settings.tenant_claim) or ""),
            roles=tuple(r.strip() for r in roles if r.strip()),
        )


def bearer_token(headers: dict[str, str]) -> str | None:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


_verifier: TokenVerifier | None = None


def verifier() -> TokenVerifier:
    """The process-wide verifier: its JWKS cache lives across warm invocations."""
    global _verifier
    if _verifier is None:
        _verifier = TokenVerifier(AuthSettings.from_env())
    return _verifier


def reset_verifier() -> None:
    global _verifier
    _verifier = None


def authorize(event: dict[str, Any]) -> dict[str, Any]:
    """An HTTP API REQUEST authorizer event (payload 2.0) → a simple response."""
    route = declaration.route(str(event.get("routeKey", "")))
    if route is None or route.public:
        # Only declared, protected routes carry this authorizer; anything else is a wiring mistake.
        return {"isAuthorized": False, "context": {"auth_error": "ROUTE_UNDECLARED"}}
    token = bearer_token(event.get("headers") or {})
    try:
        if token is None:
            raise TokenRejected("TOKEN_MISSING", "A bearer token is required.")
        identity = verifier().verify(token)
        if not declaration.has_scope(identity.scopes, route.scope):
            raise TokenRejected("INSUFFICIENT_SCOPE", f"This route requires the scope '{route.scope}'.", 403)
    except TokenRejected as rejected:
        return {
            "isAuthorized": True,
            "context": {
                "auth_error": rejected.code,
                "auth_status": rejected.status,
                "auth_detail": rejected.detail,
            },
        }
    return {"isAuthorized": True, "context": identity.context()}
