"""coca_platform.auth (and the httpclient it calls peers with), against real Redis and a stand-in for the
user service's HTTP boundary: a JWKS endpoint and the internal API-key verify endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from coca_platform.auth import API_KEY_CACHE_PREFIX, REVOKED_SESSION_PREFIX, Authenticator
from coca_platform.cache import Redis, open_redis
from coca_platform.errors import DeadlineExceeded, NotFound, QuotaExceeded, Unauthenticated, Unavailable
from coca_platform.httpclient import open_http_session, request_json
from coca_platform.testing import FakeUserService, TokenIssuer, free_port, serve_aiohttp
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.integration

SECRET = b"test-internal-secret"


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    """The user service's signing key."""
    return TokenIssuer()


@pytest.fixture(scope="module")
def other_issuer() -> TokenIssuer:
    """Another key, not in the user service's JWKS unless a test rotates it in."""
    return TokenIssuer()


async def _boom(request: web.Request) -> web.Response:
    status = int(request.match_info["status"])
    headers = {"Retry-After": "7"} if status == 429 else {}
    body = {"error": {"code": "things_broke", "message": "it broke"}}
    return web.json_response(body, status=status, headers=headers)


async def _slow(_: web.Request) -> web.Response:
    import asyncio

    await asyncio.sleep(2)
    return web.json_response({})


@pytest.fixture
async def redis(infra: Any) -> AsyncIterator[Redis]:
    async with open_redis(infra.redis_url) as client:
        yield client


@pytest.fixture
async def user_service(issuer: TokenIssuer) -> AsyncIterator[tuple[FakeUserService, str]]:
    """The user service as the authenticator sees it over HTTP, plus routes that fail on purpose."""
    fake = FakeUserService(issuer, internal_secret=SECRET)
    app = fake.app()
    app.router.add_get("/boom/{status}", _boom)
    app.router.add_get("/slow", _slow)
    async with serve_aiohttp(app) as url:
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _rejected(auth: Authenticator, credential: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(credential)
    return caught.value


async def test_valid_token_yields_the_identity_in_its_claims(make_auth: Any, issuer: TokenIssuer) -> None:
    identity = await make_auth().authenticate(issuer.mint("t-9", "u-1", role="owner"))

    assert (identity.user_id, identity.tenant_id, identity.role, identity.method) == (
        "u-1",
        "t-9",
        "owner",
        "jwt",
    )


async def test_expired_token_is_rejected_as_token_expired(make_auth: Any, issuer: TokenIssuer) -> None:
    token = issuer.mint(exp=int(time.time()) - 60, iat=int(time.time()) - 400)

    assert (await _rejected(make_auth(), token)).code == "token_expired"


async def test_token_signed_by_another_key_under_a_known_kid_is_rejected(
    make_auth: Any, issuer: TokenIssuer, other_issuer: TokenIssuer
) -> None:
    assert (await _rejected(make_auth(), other_issuer.mint(kid=issuer.kid))).code == "invalid_token"


@pytest.mark.parametrize("claim", [{"aud": "someone-else"}, {"iss": "evil"}])
async def test_token_for_another_audience_or_issuer_is_rejected(
    make_auth: Any, issuer: TokenIssuer, claim: dict[str, Any]
) -> None:
    assert (await _rejected(make_auth(), issuer.mint(**claim))).code == "invalid_token"


async def test_unsigned_alg_none_token_is_rejected(make_auth: Any, issuer: TokenIssuer) -> None:
    header = _b64(orjson.dumps({"alg": "none", "kid": issuer.kid, "typ": "JWT"}))
    token = f"{header}.{_b64(orjson.dumps(issuer.claims()))}."

    assert (await _rejected(make_auth(), token)).code == "invalid_token"


async def test_hs256_token_keyed_with_the_public_key_is_rejected(make_auth: Any, issuer: TokenIssuer) -> None:
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(orjson.dumps({"alg": "HS256", "kid": issuer.kid, "typ": "JWT"}))
    signing_input = f"{header}.{_b64(orjson.dumps(issuer.claims()))}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()

    assert (await _rejected(make_auth(), f"{signing_input}.{_b64(signature)}")).code == "invalid_token"


async def test_garbage_credential_is_rejected_as_invalid_token(make_auth: Any) -> None:
    assert (await _rejected(make_auth(), "not.a.jwt")).code == "invalid_token"


async def test_unknown_kid_refreshes_the_jwks_once_and_then_accepts_rotated_key(
    make_auth: Any, issuer: TokenIssuer, other_issuer: TokenIssuer, user_service: tuple[FakeUserService, str]
) -> None:
    fake, _ = user_service
    auth = make_auth()
    await auth.authenticate(issuer.mint())
    fake.issuers.append(other_issuer)  # the user service rotates in a new key

    identity = await auth.authenticate(other_issuer.mint(user_id="u-rotated"))

    assert identity.user_id == "u-rotated"
    assert fake.jwks_fetches == 2


async def test_flood_of_random_kids_refreshes_the_jwks_at_most_once_per_interval(
    make_auth: Any, issuer: TokenIssuer, other_issuer: TokenIssuer, user_service: tuple[FakeUserService, str]
) -> None:
    fake, _ = user_service
    auth = make_auth(min_jwks_refresh_interval_s=60)
    await auth.authenticate(issuer.mint())

    for _ in range(20):
        assert (await _rejected(auth, other_issuer.mint(kid=uuid.uuid4().hex))).code == "invalid_token"

    assert fake.jwks_fetches == 2  # the first load plus one refresh for the whole flood


async def test_cached_keys_keep_working_while_the_user_service_is_down(
    http: aiohttp.ClientSession, redis: Redis, issuer: TokenIssuer
) -> None:
    fake = FakeUserService(issuer, internal_secret=SECRET)
    async with serve_aiohttp(fake.app()) as url:
        auth = Authenticator(http, redis, user_service_url=url, internal_secret=SECRET, jwks_ttl_s=0)
        await auth.authenticate(issuer.mint())

    identity = await auth.authenticate(issuer.mint(user_id="u-still"))

    assert identity.user_id == "u-still"


async def test_no_keys_and_no_user_service_is_unavailable_not_unauthenticated(
    http: aiohttp.ClientSession, redis: Redis, issuer: TokenIssuer
) -> None:
    auth = Authenticator(http, redis, user_service_url=f"127.0.0.1:{free_port()}", internal_secret=SECRET)

    with pytest.raises(Unavailable):
        await auth.authenticate(issuer.mint())


async def test_revoked_session_is_rejected(make_auth: Any, issuer: TokenIssuer, redis: Redis) -> None:
    sid = uuid.uuid4().hex
    token = issuer.mint(sid=sid)
    auth = make_auth()
    await auth.authenticate(token)  # verified and remembered
    await redis.set(REVOKED_SESSION_PREFIX + sid, b"1", ex=60)

    assert (await _rejected(auth, token)).code == "session_revoked"
    assert (await _rejected(auth, issuer.mint(sid=sid))).code == "session_revoked"


async def test_remembered_token_is_refused_once_it_expires(make_auth: Any, issuer: TokenIssuer) -> None:
    import asyncio

    token = issuer.mint(exp=int(time.time()) + 1)
    auth = make_auth(leeway_s=0)
    await auth.authenticate(token)
    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()) + 1)

    assert (await _rejected(auth, token)).code == "token_expired"


async def test_session_check_fails_closed_when_redis_is_down(make_auth: Any, issuer: TokenIssuer) -> None:
    import redis.asyncio as aioredis

    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(Unavailable):
            await make_auth(redis=dead).authenticate(issuer.mint())
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
