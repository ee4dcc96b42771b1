"""Access tokens as the user service mints them, for tests of whatever verifies them.

A :class:`TokenIssuer` holds an RSA key, publishes it as a JWKS (``kid`` = the RFC 7638 thumbprint of
the public key, as the user service does) and mints RS256 access JWTs with the user service's claims:
``iss`` "coca-user", ``aud`` "coca", ``sub`` (user), ``tid`` (tenant), ``role``, ``sid`` (session),
``iat``, ``exp``, ``jti``. Serve its JWKS with :class:`coca_platform.testing.peers.FakeUserService`.

Tokens that must fail: ``TokenIssuer(kid=issuer.kid).mint()`` (another key under a known ``kid``),
``issuer.mint(kid="unknown")``, ``issuer.mint(ttl_s=-60)`` (expired), ``issuer.mint(aud="x")``.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = ["ALGORITHM", "AUDIENCE", "DEFAULT_TENANT", "ISSUER", "TokenIssuer"]

ALGORITHM = "RS256"
ISSUER = "coca-user"
AUDIENCE = "coca"
DEFAULT_TENANT = "tenant-1"


def _thumbprint(fields: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members, in lexicographic order, without whitespace."""
    canonical = orjson.dumps({name: fields[name] for name in ("e", "kty", "n")})
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")


class TokenIssuer:
    """A signing key (a fresh 2048-bit one unless given) and the access tokens it signs."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None, *, kid: str | None = None) -> None:
        self.key = key if key is not None else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        fields = {name: str(jwk[name]) for name in ("e", "kty", "n")}
        self.kid = kid if kid is not None else _thumbprint(fields)
        self.public_jwk = fields | {"kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document that verifies this issuer's tokens."""
        return {"keys": [dict(self.public_jwk)]}

    def claims(
        self,
        tenant_id: str = DEFAULT_TENANT,
        user_id: str | None = None,
        *,
        role: str = "member",
        sid: str | None = None,
        ttl_s: int = 300,
        **overrides: Any,
    ) -> dict[str, Any]:
        """The claims :meth:`mint` signs: a fresh user and session unless given; ``overrides`` win."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id if user_id is not None else str(uuid.uuid4()),
            "tid": tenant_id,
            "role": role,
            "sid": sid if sid is not None else str(uuid.uuid4()),
            "iat": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return claims | overrides

    def mint(
        self,
        tenant_id: str = DEFAULT_TENANT,
        user_id: str | None = None,
        *,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """An access token signed with this key under ``kid`` (default: this key's own); ``claims``
        (``role``, ``sid``, ``ttl_s``, any claim to override) as for :meth:`claims`."""
        signed = self.claims(tenant_id, user_id, **claims)
        return jwt.encode(signed, self.key, algorithm=ALGORITHM, headers={"kid": kid or self.kid})
