"""Token material: the RS256 signing key and its JWK, access JWTs, refresh tokens and API keys.

Access JWT claims: ``iss``, ``aud``, ``sub`` (user id), ``tid`` (tenant id), ``role``, ``sid`` (the
session: the refresh-token family id), ``iat``, ``exp``, ``jti``; header ``kid`` = the RFC 7638
thumbprint of the public key. Refresh tokens and API keys are random strings stored only as
SHA-256 hex digests.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import string
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from coca_user.settings import Settings

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
API_KEY_PREFIX = "coca_"
_PREFIX_LEN = 8
_SECRET_BYTES = 24  # 32 urlsafe characters
API_KEY_LEN = len(API_KEY_PREFIX) + _PREFIX_LEN + 1 + 32
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PUBLIC_PEM_RE = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk_fields(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}


def jwk_thumbprint(fields: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace."""
    canonical = orjson.dumps({k: fields[k] for k in ("e", "kty", "n")})
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")


def _parse_private_key(pem: str) -> rsa.RSAPrivateKey | str:
    """The RSA key in ``pem``, or why it cannot be used."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        return f"JWT_PRIVATE_KEY is not a readable unencrypted PEM private key ({type(exc).__name__})"
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        return "JWT_PRIVATE_KEY must be an RSA private key of at least 2048 bits"
    return key


def configuration_problem(settings: Settings) -> str | None:
    """Why this configuration must not start (None when it may)."""
    if settings.jwt_private_key is None:
        if settings.environment in ("staging", "prod"):
            return "JWT_PRIVATE_KEY (an RSA private key, PEM) must be set outside local/test environments"
        previous = _parse_previous_keys(settings.jwt_previous_public_keys)
        return previous if isinstance(previous, str) else None
    parsed = _parse_private_key(settings.jwt_private_key.get_secret_value())
    if isinstance(parsed, str):
        return parsed
    previous = _parse_previous_keys(settings.jwt_previous_public_keys)
    return previous if isinstance(previous, str) else None


@dataclass(frozen=True, slots=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str
    public_jwk: dict[str, str]

    @classmethod
    def from_private_key(cls, private_key: rsa.RSAPrivateKey) -> SigningKey:
        fields = public_jwk_fields(private_key.public_key())
        kid = jwk_thumbprint(fields)
        return cls(private_key, kid, fields | {"kid": kid, "alg": ALGORITHM, "use": "sig"})


def load_signing_key(settings: Settings) -> SigningKey:
    """The configured key, or an ephemeral one in local/test. Raises SystemExit when neither is allowed."""
    problem = configuration_problem(settings)
    if problem:
        raise SystemExit(problem)
    if settings.jwt_private_key is None:
        log.warning(
            "JWT_PRIVATE_KEY is not set: signing with an ephemeral key; tokens die with this process",
            extra={"data": {"environment": settings.environment}},
        )
        return SigningKey.from_private_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    parsed = _parse_private_key(settings.jwt_private_key.get_secret_value())
    if isinstance(parsed, str):
        raise SystemExit(parsed)
    return SigningKey.from_private_key(parsed)


def _parse_previous_keys(pems: str) -> list[rsa.RSAPublicKey] | str:
    """The RSA public keys in ``pems`` (PEM blocks, concatenated), or why they cannot be used."""
    keys: list[rsa.RSAPublicKey] = []
    for block in _PUBLIC_PEM_RE.findall(pems):
        try:
            key = serialization.load_pem_public_key(block.encode())
        except (ValueError, TypeError) as exc:
            return f"JWT_PREVIOUS_PUBLIC_KEYS holds an unreadable PEM public key ({type(exc).__name__})"
        if not isinstance(key, rsa.RSAPublicKey):
            return "JWT_PREVIOUS_PUBLIC_KEYS must hold RSA public keys"
        keys.append(key)
    if pems.strip() and not keys:
        return "JWT_PREVIOUS_PUBLIC_KEYS holds no '-----BEGIN PUBLIC KEY-----' block"
    return keys


def load_previous_keys(settings: Settings) -> list[rsa.RSAPublicKey]:
    parsed = _parse_previous_keys(settings.jwt_previous_public_keys)
    if isinstance(parsed, str):
        raise SystemExit(parsed)
    return parsed


class AccessTokens:
    """Issues access JWTs and (for logout) reads back the ones this service issued. The JWKS also
    publishes ``previous`` keys, so tokens signed before a key rotation verify until they expire."""

    def __init__(
        self,
        key: SigningKey,
        *,
        issuer: str,
        audience: str,
        ttl_s: int,
        previous: list[rsa.RSAPublicKey] | None = None,
    ) -> None:
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s
        self._verify_keys: dict[str, rsa.RSAPublicKey] = {key.kid: key.private_key.public_key()}
        published = [key.public_jwk]
        for public_key in previous or []:
            fields = public_jwk_fields(public_key)
            kid = jwk_thumbprint(fields)
            if kid not in self._verify_keys:
                self._verify_keys[kid] = public_key
                published.append(fields | {"kid": kid, "alg": ALGORITHM, "use": "sig"})
        self._jwks = {"keys": published}

    @property
    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self._jwks

    def issue(self, *, user_id: uuid.UUID, tenant_id: uuid.UUID, role: str, session_id: uuid.UUID) -> str:
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "tid": str(tenant_id),
            "role": role,
            "sid": str(session_id),
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key.private_key, algorithm=ALGORITHM, headers={"kid": self._key.kid})

    def decode(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid token this service signed, else None."""
        try:
            key = self._verify_keys.get(jwt.get_unverified_header(token).get("kid", ""))
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "tid", "sid"]},
            )
        except jwt.PyJWTError:
            return None
        return claims


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """``(key, prefix)``: ``coca_<prefix8>_<secret32>``; the prefix identifies the key in listings."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LEN))
    return f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}", prefix


def looks_like_api_key(key: str) -> bool:
    return len(key) == API_KEY_LEN and key.startswith(API_KEY_PREFIX) and key[13] == "_"
