"""Sessions: access JWTs against the JWKS, rotating refresh tokens, reuse detection, logout, /me."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import jwt
import redis.asyncio as aioredis
from coca_platform.identity import Identity
from coca_platform.testing import signed_headers
from jwt.algorithms import RSAAlgorithm

# Fixtures come from ../conftest.py; an account there has .email, .password, .user, .user_id, .tenant_id.
Register = Callable[..., Awaitable[Any]]
AsCaller = Callable[[Identity], dict[str, str]]


async def _login(client: httpx.AsyncClient, account: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _verified_claims(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """Verify ``token`` as the gateway would: against the published JWKS, RS256 only."""
    jwks = (await client.get("/.well-known/jwks.json")).json()
    (jwk,) = jwks["keys"]
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    key = RSAAlgorithm.from_jwk(jwk)
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=["RS256"], audience="coca", issuer="coca-user")  # type: ignore[arg-type]
    return claims


def _sid(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def test_jwks_publishes_the_key_that_verifies_access_tokens(
    client: httpx.AsyncClient, register: Register
) -> None:
    account = await register()
    tokens = await _login(client, account)

    claims = await _verified_claims(client, tokens["access_token"])

    assert claims["sub"] == account.user_id
    assert claims["tid"] == account.tenant_id
    assert claims["role"] == "owner"
    assert claims["exp"] - claims["iat"] == 900
    assert uuid.UUID(claims["sid"])
    assert claims["jti"]


async def test_jwks_key_id_is_the_rfc7638_thumbprint(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/jwks.json")

    (jwk,) = response.json()["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    assert "d" not in jwk  # public members only
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    assert jwk["kid"] == thumbprint
    assert "max-age" in response.headers["cache-control"]


async def test_refresh_rotates_the_pair_within_the_session(
    client: httpx.AsyncClient, register: Register, db: asyncpg.Connection
) -> None:
    account = await register()
    first = await _login(client, account)

    response = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})

    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["token_type"] == "bearer"
    claims = await _verified_claims(client, second["access_token"])
    assert claims["sid"] == _sid(first["access_token"])
    used_at = await db.fetchval(
        "SELECT used_at FROM refresh_tokens WHERE token_hash = $1",
        hashlib.sha256(first["refresh_token"].encode()).hexdigest(),
    )
    assert used_at is not None


async def test_reusing_a_refresh_token_revokes_the_whole_session(
    client: httpx.AsyncClient, register: Register, db: asyncpg.Connection, redis: aioredis.Redis
) -> None:
    account = await register()
    first = await _login(client, account)
    second = (await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()

    replayed = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    latest = await client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})

    assert replayed.status_code == 401
    assert replayed.json()["error"]["code"] == "refresh_token_reused"
    assert latest.status_code == 401  # the thief's (or the owner's) newer token died with the family
    sid = _sid(first["access_token"])
    assert await redis.get(f"coca:revoked-session:{sid}") == b"1"
    live = await db.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL", uuid.UUID(sid)
    )
    assert live == 0
    actions = await db.fetch(
        "SELECT action, data FROM audit_log WHERE user_id = $1 AND action = 'refresh_token.reused'",
        uuid.UUID(account.user_id),
    )
    assert len(actions) == 2
    assert json.loads(actions[0]["data"])["session_id"] == sid


async def test_refresh_leaves_other_sessions_alone(client: httpx.AsyncClient, register: Register) -> None:
    account = await register()
    laptop = await _login(client, account)
    phone = await _login(client, account)
    await client.post("/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
    await client.post("/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]})  # reuse

    response = await client.post("/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]})

    assert response.status_code == 200


async def test_refresh_rejects_an_unknown_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/refresh", json={"refresh_token": "not-a-token"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_refresh_token"


async def test_refresh_rejects_an_expired_token(
    client: httpx.AsyncClient, register: Register, db: asyncpg.Connection
) -> None:
    account = await register()
    tokens = await _login(client, account)
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        hashlib.sha256(tokens["refresh_token"].encode()).hexdigest(),
    )

    response = await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "refresh_token_expired"


async def test_logout_revokes_the_session_of_the_bearer_token(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller, redis: aioredis.Redis
) -> None:
    account = await register()
    tokens = await _login(client, account)
    headers = as_caller(account.identity()) | {"authorization": f"Bearer {tokens['access_token']}"}

    response = await client.post("/v1/auth/logout", headers=headers)

    assert response.status_code == 204
    key = f"coca:revoked-session:{_sid(tokens['access_token'])}"
    assert await redis.get(key) == b"1"
    assert 0 < await redis.ttl(key) <= 900
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 401


async def test_logout_revokes_the_session_of_a_given_refresh_token(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller, redis: aioredis.Redis
) -> None:
    account = await register()
    tokens = await _login(client, account)

    response = await client.post(
        "/v1/auth/logout",
        json={"refresh_token": tokens["refresh_token"]},
        headers=as_caller(account.identity()),
    )

    assert response.status_code == 204
    assert await redis.exists(f"coca:revoked-session:{_sid(tokens['access_token'])}") == 1
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 401


async def test_logout_cannot_end_another_users_session(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller
) -> None:
    victim, attacker = await register(), await register()
    tokens = await _login(client, victim)

    response = await client.post(
        "/v1/auth/logout",
        json={"refresh_token": tokens["refresh_token"]},
        headers=as_caller(attacker.identity()),
    )

    assert response.status_code == 204
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200


async def test_logout_needs_an_identity(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/logout")

    assert response.status_code == 401


async def test_me_returns_the_caller(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller
) -> None:
    account = await register()

    response = await client.get("/v1/users/me", headers=as_caller(account.identity()))

    assert response.status_code == 200
    assert response.json() == account.user


async def test_me_without_an_identity_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/users/me")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_me_with_a_forged_identity_is_401(client: httpx.AsyncClient, register: Register) -> None:
    account = await register()

    response = await client.get("/v1/users/me", headers=signed_headers(account.identity(), "not-the-secret"))

    assert response.status_code == 401


async def test_me_for_a_user_of_another_tenant_is_404(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller
) -> None:
    one, other = await register(), await register()
    mixed = Identity(tenant_id=other.tenant_id, user_id=one.user_id, role="owner")

    response = await client.get("/v1/users/me", headers=as_caller(mixed))

    assert response.status_code == 404


async def test_readiness_checks_postgres_and_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}
