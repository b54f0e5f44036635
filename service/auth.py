"""Who is asking, and what they may do: API keys, OpenID Connect tokens, and the one access policy.

Authentication happens once per request, in `service.access.Access` (an ASGI middleware under every route).
It turns `Authorization: Bearer …`, `X-API-Key: …` or a key as a Basic password into a `Principal`, or
answers 401 for a credential that is wrong, expired, revoked or empty. What a principal may do is decided by
`Principal.can` alone: the middleware applies it to every write and to the key and administration paths;
reads of internal collections go through the per-principal catalog view (`service.deps`).

Keys look like `gt_<prefix>_<secret>`: 256 bits of secret from `secrets`, stored as a SHA-256 hash (a slow
password hash buys nothing against a random 256-bit secret) and compared in constant time. The prefix only
finds the row.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jwt

from service.settings import AuthSettings

ROLES = ("viewer", "editor", "admin")
RANK = {"viewer": 1, "editor": 2, "admin": 3, "platform": 4}
KEY_PREFIX = "gt_"


class AuthError(Exception):
    """A credential was presented and is not valid: 401."""


@dataclass(frozen=True)
class Principal:
    subject: str  # "key:<prefix> <label>" or the token's `sub`: what the change log records
    role: str  # viewer, editor, admin, platform
    municipality: str | None = None  # slug; None for a platform administrator

    def can(self, need: str, municipality: str | None) -> bool:
        """`need` is a role; platform administrators may do everything."""
        if self.role == "platform":
            return True
        if need == "platform" or municipality is None or municipality != self.municipality:
            return False
        return RANK[self.role] >= RANK[need]


def new_key() -> tuple[str, str, bytes]:
    """(key shown once, prefix, hash to store)."""
    prefix = secrets.token_hex(5)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, digest(key)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_prefix(key: str) -> str | None:
    parts = key.split("_")
    if len(parts) < 3 or parts[0] + "_" != KEY_PREFIX or not parts[1]:
        return None
    return parts[1]


FIND_KEY = """
SELECT k.role, k.label, k.prefix, k.secret_hash, m.slug AS municipality
FROM api_key k LEFT JOIN municipality m ON m.id = k.municipality_id
WHERE k.prefix = $1 AND k.revoked_at IS NULL
"""


async def principal_for_key(conn: Any, key: str) -> Principal:
    prefix = key_prefix(key)
    row = await conn.fetchrow(FIND_KEY, prefix) if prefix else None
    # Compare even when nothing was found, so timing does not tell whether a prefix exists.
    stored = row["secret_hash"] if row else b"\0" * 32
    if not hmac.compare_digest(digest(key), stored) or row is None:
        raise AuthError("the API key is not valid (unknown, mistyped or revoked)")
    label = f" {row['label']}" if row["label"] else ""
    return Principal(f"key:{row['prefix']}{label}", row["role"], row["municipality"])


class TokenVerifier:
    """OpenID Connect bearer tokens from one configured issuer, checked against its signing keys (JWKS from
    a URL, or given inline for machines without access to the issuer); claims map to municipality and role."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return bool(self.settings.oidc_issuer)

    @cached_property
    def _client(self) -> jwt.PyJWKClient | None:
        return jwt.PyJWKClient(self.settings.oidc_jwks_url) if self.settings.oidc_jwks_url else None

    @cached_property
    def _inline(self) -> jwt.PyJWKSet | None:
        return jwt.PyJWKSet.from_json(self.settings.oidc_jwks) if self.settings.oidc_jwks else None

    def _signing_key(self, token: str) -> Any:
        if self._inline is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            for key in self._inline.keys:
                if kid is None or key.key_id == kid:
                    return key.key
            raise AuthError("the token is signed with a key the issuer does not list")
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        raise AuthError("token signing keys are not configured (GEOTWIN_AUTH__OIDC_JWKS_URL)")

    def verify(self, token: str) -> Principal:
        s = self.settings
        try:
            claims = jwt.decode(token, self._signing_key(token), algorithms=["RS256", "ES256", "PS256"],
                                issuer=s.oidc_issuer, audience=s.oidc_audience or None,
                                options={"require": ["exp", "iss", "sub"], "verify_aud": bool(s.oidc_audience)},
                                leeway=30)
        except jwt.PyJWKClientError as exc:
            raise AuthError(f"the token's signing key cannot be found: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"the token is not valid: {exc}") from None
        role = _role_from(claims.get(s.role_claim))
        municipality = claims.get(s.municipality_claim)
        if role is None or (role != "platform" and not isinstance(municipality, str)):
            raise AuthError(f"the token lacks a GeoTwin role ({s.role_claim}: viewer, editor or admin) or a "
                            f"municipality ({s.municipality_claim})")
        return Principal(f"token:{claims['sub']}", role, municipality if role != "platform" else None)


def _role_from(claim: Any) -> str | None:
    """A role claim may be one string or a list (Keycloak-style roles): the highest GeoTwin role wins."""
    values = claim if isinstance(claim, list) else [claim]
    known = [v for v in values if isinstance(v, str) and v in RANK]
    return max(known, key=RANK.__getitem__) if known else None
