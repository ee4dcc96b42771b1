"""Authenticating a caller's credential: an access JWT from the user service, or an API key.

Used by the gateway (``Authorization: Bearer``) and ws_gateway (``?token=`` / auth message)::

    auth = Authenticator(http, redis, user_service_url=..., internal_secret=...)
    identity = await auth.authenticate(credential)   # Identity, or raises Unauthenticated

- **JWTs** are verified locally, algorithms pinned to RS256 (``alg=none`` and HS256-with-the-public-key
  forgeries fail), issuer and audience checked, against the user service's JWKS. The key set is cached
  for ``jwks_ttl_s`` and refreshed early when a token names an unknown ``kid`` — at most once per
  ``min_jwks_refresh_interval_s``, so a flood of random kids cannot hammer the user service. If a
  refresh fails the cached keys stay in use. A token that passed is remembered in process until its
  ``exp`` (no second signature check), but its session is checked on every call: Redis
  ``EXISTS coca:revoked-session:{sid}`` refuses a logged-out session. That check needs Redis, so it
  **fails closed**: Redis down → ``Unavailable`` (503).
- **API keys** (``coca_<prefix8>_<secret>``) are checked by the user service
  (``POST /internal/v1/api-keys/verify`` with a signed ``system`` identity). Answers are cached in Redis
  under the key's SHA-256 (never the key): ``api_key_cache_ttl_s`` for valid keys, a shorter
  ``negative_cache_ttl_s`` for invalid ones. The cache is an optimisation: Redis down → ask the user
  service every time. A revoked key may therefore work for up to ``api_key_cache_ttl_s``, unless the
  user service deletes ``coca:api-key-auth:{sha256 hex of the key}`` when it revokes the key.

Error codes (all ``Unauthenticated``, 401): ``invalid_token``, ``token_expired``, ``session_revoked``,
``invalid_api_key``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from coca_platform.cache import Redis
from coca_platform.errors import CocaError, InvalidArgument, NotFound, Unauthenticated, Unavailable
from coca_platform.httpclient import request_json, service_url
from coca_platform.identity import IDENTITY_HEADER, SIGNATURE_HEADER, Identity, sign

log = logging.getLogger(__name__)

JWT_ALGORITHMS = ["RS256"]
REVOKED_SESSION_PREFIX = "coca:revoked-session:"
API_KEY_CACHE_PREFIX = "coca:api-key-auth:"
SYSTEM_IDENTITY = Identity(tenant_id="-", user_id="service:gateway", role="system")

_API_KEY_RE = re.compile(r"coca_[A-Za-z0-9_-]{8}_[A-Za-z0-9_-]{8,256}")
_MAX_CREDENTIAL_LEN = 8192
_NEGATIVE = b"-"
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "tid", "sid"]
_VERIFIED_CACHE_SIZE = 8192  # tokens whose signature and claims were checked (revocation never cached)


@dataclass(frozen=True, slots=True)
class _VerifiedToken:
    identity: Identity
    sid: str
    expires_at: float  # exp + leeway, epoch seconds


class _VerifiedKey(BaseModel):
    tenant_id: str
    user_id: str
    role: str = "member"
    scopes: list[str] = []
    api_key_id: str

    def identity(self) -> Identity:
        return Identity(
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            role=self.role,
            scopes=tuple(self.scopes),
            method="api_key",
            api_key_id=self.api_key_id,
        )


def api_key_digest(key: str) -> str:
    """SHA-256 hex of an API key: its cache key suffix (``API_KEY_CACHE_PREFIX + digest``)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _invalid_token(message: str) -> Unauthenticated:
    return Unauthenticated(message, code="invalid_token")


def _parse_jwks(document: Any) -> dict[str, RSAPublicKey]:
    keys: dict[str, RSAPublicKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for jwk in entries if isinstance(entries, list) else []:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") not in JWT_ALGORITHMS:
            continue
        try:
            key = RSAAlgorithm.from_jwk(jwk)
        except (jwt.InvalidKeyError, ValueError, KeyError, TypeError):
            log.warning("skipping a malformed JWKS key", extra={"data": {"kid": jwk.get("kid")}})
            continue
        if isinstance(key, RSAPublicKey):
            keys[jwk["kid"]] = key
    return keys


class Authenticator:
    """Turns a bearer credential into a verified :class:`Identity`. One per process, shared."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        redis: Redis,
        *,
        user_service_url: str,
        internal_secret: bytes,
        issuer: str = "coca-user",
        audience: str = "coca",
        jwks_ttl_s: float = 300,
        api_key_cache_ttl_s: int = 30,
        negative_cache_ttl_s: int = 5,
        min_jwks_refresh_interval_s: float = 10,
        leeway_s: float = 5,
        redis_timeout_s: float = 1.0,
        call_timeout_s: float = 3.0,
    ) -> None:
        base = service_url(user_service_url)
        self._http, self._redis = http, redis
        self._jwks_url = f"{base}/.well-known/jwks.json"
        self._verify_url = f"{base}/internal/v1/api-keys/verify"
        self._secret = internal_secret
        self._issuer, self._audience, self._leeway = issuer, audience, leeway_s
        self._jwks_ttl, self._min_refresh = jwks_ttl_s, min_jwks_refresh_interval_s
        self._key_ttl, self._negative_ttl = max(1, api_key_cache_ttl_s), max(1, negative_cache_ttl_s)
        self._redis_timeout, self._call_timeout = redis_timeout_s, call_timeout_s
        self._keys: dict[str, RSAPublicKey] = {}
        self._expires_at = float("-inf")  # when the cached key set is due for a refresh
        self._attempted_at = float("-inf")  # when the last fetch (good or bad) finished
        self._next_kid_refresh = float("-inf")  # earliest refresh the next unknown kid may trigger
        self._refresh_lock = asyncio.Lock()
        self._verified: dict[str, _VerifiedToken] = {}  # insertion-ordered: oldest first

    async def authenticate(self, credential: str) -> Identity:
        credential = credential.strip()
        if not credential or len(credential) > _MAX_CREDENTIAL_LEN:
            raise _invalid_token("missing or oversized credential")
        if credential.startswith("coca_"):
            return await self._api_key(credential)
        return await self._jwt(credential)

    async def check_jwks(self) -> None:
        """Readiness: fetch the user service's JWKS now (raises when unreachable or empty)."""
        document = await request_json(
            self._http, "GET", self._jwks_url, peer="user service", timeout_s=self._call_timeout
        )
        keys = _parse_jwks(document)
        if not keys:
            raise Unavailable("the user service's JWKS has no usable RS256 key")
        self._install(keys)

    # --- JWTs -------------------------------------------------------------------------------------

    async def _jwt(self, token: str) -> Identity:
        verified = self._verified.get(token)
        if verified is None or verified.expires_at <= time.time():
            verified = await self._verify_jwt(token)
            if len(self._verified) >= _VERIFIED_CACHE_SIZE:  # drop the oldest entry
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = verified
        if await self._session_revoked(verified.sid):
            raise Unauthenticated("session has been revoked", code="session_revoked")
        return verified.identity

    async def _verify_jwt(self, token: str) -> _VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _invalid_token("malformed token") from exc
        if header.get("alg") not in JWT_ALGORITHMS:
            raise _invalid_token("token algorithm is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid_token("token has no key id")
        key = await self._signing_key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=JWT_ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            self._verified.pop(token, None)
            raise Unauthenticated("token has expired", code="token_expired") from exc
        except jwt.InvalidTokenError as exc:
            raise _invalid_token(f"invalid token: {exc}") from exc
        sub, tid, sid, role = claims["sub"], claims["tid"], claims["sid"], claims.get("role", "member")
        if not all(isinstance(v, str) and v for v in (sub, tid, sid, role)):
            raise _invalid_token("token claims are malformed")
        scopes = claims.get("scopes")
        identity = Identity(
            tenant_id=tid,
            user_id=sub,
            role=role,
            scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else (),
            method="jwt",
        )
        return _VerifiedToken(identity, sid, float(claims["exp"]) + self._leeway)

    async def _session_revoked(self, sid: str) -> bool:
        try:
            async with asyncio.timeout(self._redis_timeout):
                return bool(await self._redis.exists(REVOKED_SESSION_PREFIX + sid))
        except (RedisError, OSError, TimeoutError) as exc:
            raise Unavailable("cannot check the session: session store unavailable") from exc

    async def _signing_key(self, kid: str) -> RSAPublicKey:
        if time.monotonic() >= self._expires_at:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None and (now := time.monotonic()) >= self._next_kid_refresh:
            self._next_kid_refresh = now + self._min_refresh  # claimed before awaiting: one per interval
            await self._refresh()
            key = self._keys.get(kid)
        if key is None:
            if not self._keys:
                raise Unavailable("signing keys are unavailable")
            raise _invalid_token("token is signed by an unknown key")
        return key

    async def _refresh(self) -> None:
        """Fetch the JWKS, one fetch at a time; waiters behind a fetch reuse its outcome."""
        started = time.monotonic()
        async with self._refresh_lock:
            if self._attempted_at >= started:
                return
            try:
                document = await request_json(
                    self._http, "GET", self._jwks_url, peer="user service", timeout_s=self._call_timeout
                )
                keys = _parse_jwks(document)
                if not keys:
                    raise Unavailable("the user service's JWKS has no usable RS256 key")
            except CocaError as exc:
                self._attempted_at = time.monotonic()
                # with keys in hand, keep using them a while; with none, try again soon
                self._expires_at = self._attempted_at + (self._min_refresh if self._keys else 1.0)
                log.warning(
                    "jwks refresh failed",
                    extra={"data": {"error": exc.message, "cached_keys": len(self._keys)}},
                )
                return
            self._install(keys)

    def _install(self, keys: dict[str, RSAPublicKey]) -> None:
        if set(keys) != set(self._keys):
            log.info("jwks loaded", extra={"data": {"kids": sorted(keys)}})
            self._verified.clear()  # a key that left the set must not keep vouching for tokens
        self._keys = keys
        self._attempted_at = time.monotonic()
        self._expires_at = self._attempted_at + self._jwks_ttl

    # --- API keys ---------------------------------------------------------------------------------

    async def _api_key(self, key: str) -> Identity:
        if not _API_KEY_RE.fullmatch(key):
            raise Unauthenticated("malformed API key", code="invalid_api_key")
        cache_key = API_KEY_CACHE_PREFIX + api_key_digest(key)
        cached = await self._cache_get(cache_key)
        if cached == _NEGATIVE:
            raise Unauthenticated("invalid API key", code="invalid_api_key")
        if cached is not None:
            try:
                return _VerifiedKey.model_validate_json(cached).identity()
            except ValidationError:
                log.warning("ignoring a malformed cached API key entry")
        encoded, signature = sign(SYSTEM_IDENTITY, self._secret)
        headers = {IDENTITY_HEADER: encoded.decode(), SIGNATURE_HEADER: signature.decode()}
        try:
            verified = await request_json(
                self._http,
                "POST",
                self._verify_url,
                peer="user service",
                json={"key": key},
                headers=headers,
                timeout_s=self._call_timeout,
                model=_VerifiedKey,
            )
        except (Unauthenticated, NotFound, InvalidArgument) as exc:
            if "internal identity" in exc.message:  # our signature was refused: misconfiguration
                log.error(
                    "user service refused the internal identity", extra={"data": {"error": exc.message}}
                )
                raise Unavailable("cannot verify API keys right now") from exc
            await self._cache_set(cache_key, _NEGATIVE, self._negative_ttl)
            raise Unauthenticated("invalid API key", code="invalid_api_key") from exc
        except CocaError as exc:
            if isinstance(exc, Unavailable):
                raise
            log.error("API key verification failed", extra={"data": {"error": exc.message, "code": exc.code}})
            raise Unavailable("cannot verify API keys right now") from exc
        await self._cache_set(cache_key, orjson.dumps(verified.model_dump()), self._key_ttl)
        return verified.identity()

    async def _cache_get(self, cache_key: str) -> bytes | None:
        try:
            async with asyncio.timeout(self._redis_timeout):
                value = await self._redis.get(cache_key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("API key cache unavailable", extra={"data": {"error": type(exc).__name__}})
            return None
        return value.encode() if isinstance(value, str) else value

    async def _cache_set(self, cache_key: str, value: bytes, ttl_s: int) -> None:
        try:
            async with asyncio.timeout(self._redis_timeout):
                await self._redis.set(cache_key, value, ex=ttl_s)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("API key cache unavailable", extra={"data": {"error": type(exc).__name__}})
