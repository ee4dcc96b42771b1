"""coca_platform.auth (and the httpclient it calls peers with), against real Redis and a stand-in for the
user service's HTTP boundary: a JWKS endpoint and the internal API-key verify endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from coca_platform.auth import API_KEY_CACHE_PREFIX, REVOKED_SESSION_PREFIX, Authenticator
from coca_platform.cache import Redis, open_redis
from coca_platform.errors import DeadlineExceeded, NotFound, QuotaExceeded, Unauthenticated, Unavailable
from coca_platform.httpclient import open_http_session, request_json
from coca_platform.identity import IDENTITY_HEADER, SIGNATURE_HEADER, verify
from coca_platform.testing import free_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

pytestmark = pytest.mark.integration

SECRET = b"test-internal-secret"


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


class FakeUserService:
    """The user service as the authenticator sees it over HTTP."""

    def __init__(self, keys: dict[str, rsa.RSAPrivateKey]) -> None:
        self.keys = keys
        self.jwks_fetches = 0
        self.verify_calls = 0
        self.api_keys: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_post("/internal/v1/api-keys/verify", self._verify)
        app.router.add_get("/boom/{status}", self._boom)
        app.router.add_get("/slow", self._slow)
        return app

    async def _jwks(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        keys = [
            RSAAlgorithm.to_jwk(k.public_key(), as_dict=True) | {"kid": kid, "alg": "RS256", "use": "sig"}
            for kid, k in self.keys.items()
        ]
        return web.json_response({"keys": keys})

    async def _verify(self, request: web.Request) -> web.Response:
        try:
            caller = verify(
                request.headers.get(IDENTITY_HEADER), request.headers.get(SIGNATURE_HEADER), SECRET
            )
        except Unauthenticated as exc:  # what the platform's error handler renders
            return _error(401, exc.code, exc.message)
        if caller.role != "system":
            return _error(403, "permission_denied", "system callers only")
        self.verify_calls += 1
        found = self.api_keys.get((await request.json())["key"])
        if found is None:
            return _error(401, "invalid_api_key", "unknown API key")
        return web.json_response(found)

    async def _boom(self, request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        headers = {"Retry-After": "7"} if status == 429 else {}
        return _error(status, "things_broke", "it broke", headers)

    async def _slow(self, _: web.Request) -> web.Response:
        import asyncio

        await asyncio.sleep(2)
        return web.json_response({})


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def redis(infra: Any) -> AsyncIterator[Redis]:
    async with open_redis(infra.redis_url) as client:
        yield client


@pytest.fixture
async def user_service(rsa_keys: list[rsa.RSAPrivateKey]) -> AsyncIterator[tuple[FakeUserService, str]]:
    fake = FakeUserService({"k1": rsa_keys[0]})
    async with _serve(fake.app()) as url:
        yield fake, url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with open_http_session(timeout_s=5, limit=10) as session:
        yield session


@pytest.fixture
def make_auth(
    http: aiohttp.ClientSession, redis: Redis, user_service: tuple[FakeUserService, str]
) -> Callable[..., Authenticator]:
    def make(**kwargs: Any) -> Authenticator:
        options: dict[str, Any] = {"user_service_url": user_service[1], "internal_secret": SECRET} | kwargs
        return Authenticator(http, options.pop("redis", redis), **options)

    return make


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "coca-user",
        "aud": "coca",
        "sub": f"u-{uuid.uuid4().hex[:8]}",
        "tid": "tenant-1",
        "role": "admin",
        "sid": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    return claims | overrides


def _token(key: rsa.RSAPrivateKey, kid: str = "k1", **overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), key, algorithm="RS256", headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _rejected(auth: Authenticator, credential: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(credential)
    return caught.value


async def test_valid_token_yields_the_identity_in_its_claims(make_auth: Any, rsa_keys: Any) -> None:
    identity = await make_auth().authenticate(_token(rsa_keys[0], sub="u-1", tid="t-9", role="owner"))

    assert (identity.user_id, identity.tenant_id, identity.role, identity.method) == (
        "u-1",
        "t-9",
        "owner",
        "jwt",
    )


async def test_expired_token_is_rejected_as_token_expired(make_auth: Any, rsa_keys: Any) -> None:
    token = _token(rsa_keys[0], exp=int(time.time()) - 60, iat=int(time.time()) - 400)

    assert (await _rejected(make_auth(), token)).code == "token_expired"


async def test_token_signed_by_another_key_under_a_known_kid_is_rejected(
    make_auth: Any, rsa_keys: Any
) -> None:
    assert (await _rejected(make_auth(), _token(rsa_keys[1], kid="k1"))).code == "invalid_token"


@pytest.mark.parametrize("claim", [{"aud": "someone-else"}, {"iss": "evil"}])
async def test_token_for_another_audience_or_issuer_is_rejected(
    make_auth: Any, rsa_keys: Any, claim: dict[str, str]
) -> None:
    assert (await _rejected(make_auth(), _token(rsa_keys[0], **claim))).code == "invalid_token"


async def test_unsigned_alg_none_token_is_rejected(make_auth: Any) -> None:
    header = _b64(orjson.dumps({"alg": "none", "kid": "k1", "typ": "JWT"}))
    token = f"{header}.{_b64(orjson.dumps(_claims()))}."

    assert (await _rejected(make_auth(), token)).code == "invalid_token"


async def test_hs256_token_keyed_with_the_public_key_is_rejected(make_auth: Any, rsa_keys: Any) -> None:
    public_pem = (
        rsa_keys[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = _b64(orjson.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}))
    signing_input = f"{header}.{_b64(orjson.dumps(_claims()))}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()

    assert (await _rejected(make_auth(), f"{signing_input}.{_b64(signature)}")).code == "invalid_token"


async def test_garbage_credential_is_rejected_as_invalid_token(make_auth: Any) -> None:
    assert (await _rejected(make_auth(), "not.a.jwt")).code == "invalid_token"


async def test_unknown_kid_refreshes_the_jwks_once_and_then_accepts_rotated_key(
    make_auth: Any, rsa_keys: Any, user_service: tuple[FakeUserService, str]
) -> None:
    fake, _ = user_service
    auth = make_auth()
    await auth.authenticate(_token(rsa_keys[0]))
    fake.keys["k2"] = rsa_keys[1]  # the user service rotates in a new key

    identity = await auth.authenticate(_token(rsa_keys[1], kid="k2", sub="u-rotated"))

    assert identity.user_id == "u-rotated"
    assert fake.jwks_fetches == 2


async def test_flood_of_random_kids_refreshes_the_jwks_at_most_once_per_interval(
    make_auth: Any, rsa_keys: Any, user_service: tuple[FakeUserService, str]
) -> None:
    fake, _ = user_service
    auth = make_auth(min_jwks_refresh_interval_s=60)
    await auth.authenticate(_token(rsa_keys[0]))

    for _ in range(20):
        assert (await _rejected(auth, _token(rsa_keys[1], kid=uuid.uuid4().hex))).code == "invalid_token"

    assert fake.jwks_fetches == 2  # the first load plus one refresh for the whole flood


async def test_cached_keys_keep_working_while_the_user_service_is_down(
    http: aiohttp.ClientSession, redis: Redis, rsa_keys: Any
) -> None:
    fake = FakeUserService({"k1": rsa_keys[0]})
    async with _serve(fake.app()) as url:
        auth = Authenticator(http, redis, user_service_url=url, internal_secret=SECRET, jwks_ttl_s=0)
        await auth.authenticate(_token(rsa_keys[0]))

    identity = await auth.authenticate(_token(rsa_keys[0], sub="u-still"))

    assert identity.user_id == "u-still"


async def test_no_keys_and_no_user_service_is_unavailable_not_unauthenticated(
    http: aiohttp.ClientSession, redis: Redis, rsa_keys: Any
) -> None:
    auth = Authenticator(http, redis, user_service_url=f"127.0.0.1:{free_port()}", internal_secret=SECRET)

    with pytest.raises(Unavailable):
        await auth.authenticate(_token(rsa_keys[0]))


async def test_revoked_session_is_rejected(make_auth: Any, rsa_keys: Any, redis: Redis) -> None:
    sid = uuid.uuid4().hex
    token = _token(rsa_keys[0], sid=sid)
    auth = make_auth()
    await auth.authenticate(token)  # verified and remembered
    await redis.set(REVOKED_SESSION_PREFIX + sid, b"1", ex=60)

    assert (await _rejected(auth, token)).code == "session_revoked"
    assert (await _rejected(auth, _token(rsa_keys[0], sid=sid))).code == "session_revoked"


async def test_remembered_token_is_refused_once_it_expires(make_auth: Any, rsa_keys: Any) -> None:
    import asyncio

    token = _token(rsa_keys[0], exp=int(time.time()) + 1)
    auth = make_auth(leeway_s=0)
    await auth.authenticate(token)
    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()) + 1)

    assert (await _rejected(auth, token)).code == "token_expired"


async def test_session_check_fails_closed_when_redis_is_down(make_auth: Any, rsa_keys: Any) -> None:
    import redis.asyncio as aioredis

    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(Unavailable):
            await make_auth(redis=dead).authenticate(_token(rsa_keys[0]))
    finally:
        await dead.aclose()


async def test_valid_api_key_is_verified_once_then_served_from_the_cache(
    make_auth: Any, user_service: tuple[FakeUserService, str], redis: Redis
) -> None:
    fake, _ = user_service
    key = f"coca_{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
    fake.api_keys[key] = {
        "tenant_id": "t-1",
        "user_id": "u-1",
        "role": "member",
        "scopes": ["agents:read"],
        "api_key_id": "ak-1",
    }
    auth = make_auth()

    first = await auth.authenticate(key)
    second = await make_auth().authenticate(key)  # another process: the cache is shared in Redis

    assert first == second
    assert (first.method, first.api_key_id, first.scopes, first.tenant_id) == (
        "api_key",
        "ak-1",
        ("agents:read",),
        "t-1",
    )
    assert fake.verify_calls == 1
    cached = await redis.get(API_KEY_CACHE_PREFIX + hashlib.sha256(key.encode()).hexdigest())
    assert cached is not None
    assert key.encode() not in cached
    assert await redis.ttl(API_KEY_CACHE_PREFIX + hashlib.sha256(key.encode()).hexdigest()) <= 30


async def test_invalid_api_key_is_rejected_and_the_rejection_is_cached_briefly(
    make_auth: Any, user_service: tuple[FakeUserService, str], redis: Redis
) -> None:
    fake, _ = user_service
    key = f"coca_{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
    auth = make_auth()

    assert (await _rejected(auth, key)).code == "invalid_api_key"
    assert (await _rejected(auth, key)).code == "invalid_api_key"

    assert fake.verify_calls == 1
    assert 0 < await redis.ttl(API_KEY_CACHE_PREFIX + hashlib.sha256(key.encode()).hexdigest()) <= 5


async def test_malformed_api_key_is_rejected_without_asking_the_user_service(
    make_auth: Any, user_service: tuple[FakeUserService, str]
) -> None:
    assert (await _rejected(make_auth(), "coca_short")).code == "invalid_api_key"
    assert user_service[0].verify_calls == 0


async def test_api_key_check_refused_for_a_wrong_internal_secret_is_unavailable_and_not_cached(
    make_auth: Any, user_service: tuple[FakeUserService, str]
) -> None:
    fake, _ = user_service
    key = f"coca_{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
    fake.api_keys[key] = {"tenant_id": "t-1", "user_id": "u-1", "role": "member", "api_key_id": "ak-2"}

    with pytest.raises(Unavailable):
        await make_auth(internal_secret=b"wrong").authenticate(key)

    assert (await make_auth().authenticate(key)).api_key_id == "ak-2"  # no cached rejection left behind


async def test_request_json_maps_peer_errors_to_coca_errors(
    http: aiohttp.ClientSession, user_service: tuple[FakeUserService, str]
) -> None:
    base = user_service[1]

    with pytest.raises(NotFound) as not_found:
        await request_json(http, "GET", f"{base}/boom/404", peer="user service")
    with pytest.raises(QuotaExceeded) as limited:
        await request_json(http, "GET", f"{base}/boom/429", peer="user service")
    with pytest.raises(Unavailable):
        await request_json(http, "GET", f"{base}/boom/500", peer="user service")

    assert (not_found.value.code, not_found.value.message) == ("things_broke", "it broke")
    assert limited.value.retry_after == 7


async def test_request_json_maps_refused_connections_and_timeouts(
    http: aiohttp.ClientSession, user_service: tuple[FakeUserService, str]
) -> None:
    with pytest.raises(Unavailable) as refused:
        await request_json(http, "GET", f"http://127.0.0.1:{free_port()}/x", peer="billing")
    with pytest.raises(DeadlineExceeded):
        await request_json(http, "GET", f"{user_service[1]}/slow", peer="user service", timeout_s=0.2)

    assert not isinstance(refused.value, DeadlineExceeded)
    assert "billing" in refused.value.message
