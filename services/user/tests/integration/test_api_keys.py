"""API keys: created once-shown, listed without secrets, revoked, verified for the gateway."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from coca_platform.identity import Identity

# Fixtures come from ../conftest.py; an account there has .email, .password, .user, .user_id, .tenant_id.
Register = Callable[..., Awaitable[Any]]
AddMember = Callable[[Any], Awaitable[Any]]
AsCaller = Callable[[Identity], dict[str, str]]

_KEY_RE = re.compile(r"^coca_([a-z0-9]{8})_[A-Za-z0-9_-]{32}$")


async def _create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", json={"name": "ci", **body}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_shows_the_key_once_and_stores_only_its_hash(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller, db: asyncpg.Connection
) -> None:
    account = await register()
    headers = as_caller(account.identity())

    created = await _create(client, headers, name="deploy bot", scopes=["agents:read", "agents:write"])
    listed = (await client.get("/v1/api-keys", headers=headers)).json()

    match = _KEY_RE.match(created["key"])
    assert match, created["key"]
    assert match.group(1) == created["prefix"]
    assert created["name"] == "deploy bot"
    assert created["scopes"] == ["agents:read", "agents:write"]
    assert [item["id"] for item in listed["items"]] == [created["id"]]
    assert "key" not in listed["items"][0]
    row = await db.fetchrow("SELECT key_hash FROM api_keys WHERE id = $1", uuid.UUID(created["id"]))
    assert row["key_hash"] == hashlib.sha256(created["key"].encode()).hexdigest()
    audit = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'api_key.created'",
        uuid.UUID(account.tenant_id),
    )
    assert audit == 1


async def test_verify_names_the_keys_tenant_user_role_and_scopes(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller, system_headers: dict[str, str]
) -> None:
    account = await register()
    created = await _create(client, as_caller(account.identity()), scopes=["usage:read"])

    response = await client.post(
        "/internal/v1/api-keys/verify", json={"key": created["key"]}, headers=system_headers
    )

    assert response.status_code == 200
    assert response.json() == {
        "tenant_id": account.tenant_id,
        "user_id": account.user_id,
        "role": "owner",
        "scopes": ["usage:read"],
        "api_key_id": created["id"],
    }


async def test_verify_records_use_at_most_once_a_minute(
    client: httpx.AsyncClient,
    register: Register,
    as_caller: AsCaller,
    system_headers: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    account = await register()
    created = await _create(client, as_caller(account.identity()))
    key_id = uuid.UUID(created["id"])
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id) is None

    await client.post("/internal/v1/api-keys/verify", json={"key": created["key"]}, headers=system_headers)
    first_use = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)
    await client.post("/internal/v1/api-keys/verify", json={"key": created["key"]}, headers=system_headers)
    second_use = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)

    assert first_use is not None
    assert second_use == first_use


async def test_verify_requires_the_system_role(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller
) -> None:
    account = await register()
    headers = as_caller(account.identity())
    created = await _create(client, headers)

    as_owner = await client.post(
        "/internal/v1/api-keys/verify", json={"key": created["key"]}, headers=headers
    )
    anonymous = await client.post("/internal/v1/api-keys/verify", json={"key": created["key"]})

    assert as_owner.status_code == 403
    assert as_owner.json()["error"]["code"] == "permission_denied"
    assert anonymous.status_code == 401


async def test_verify_rejects_unknown_and_malformed_keys(
    client: httpx.AsyncClient, system_headers: dict[str, str]
) -> None:
    for key in ("coca_abcdefgh_" + "x" * 32, "not a key"):
        response = await client.post(
            "/internal/v1/api-keys/verify", json={"key": key}, headers=system_headers
        )

        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


async def test_a_deleted_key_stops_working_and_leaves_the_gateway_cache(
    client: httpx.AsyncClient,
    register: Register,
    as_caller: AsCaller,
    system_headers: dict[str, str],
    redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:
    account = await register()
    headers = as_caller(account.identity())
    created = await _create(client, headers)
    cache_key = f"coca:api-key-auth:{hashlib.sha256(created['key'].encode()).hexdigest()}"
    await redis.set(cache_key, b"{}", ex=60)  # as the gateway caches a verified key

    deleted = await client.delete(f"/v1/api-keys/{created['id']}", headers=headers)
    deleted_again = await client.delete(f"/v1/api-keys/{created['id']}", headers=headers)
    verified = await client.post(
        "/internal/v1/api-keys/verify", json={"key": created["key"]}, headers=system_headers
    )

    assert deleted.status_code == deleted_again.status_code == 204
    assert verified.status_code == 401
    assert await redis.exists(cache_key) == 0
    assert (await client.get("/v1/api-keys", headers=headers)).json()["items"] == []
    audit = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'api_key.revoked'",
        uuid.UUID(account.tenant_id),
    )
    assert audit == 1


async def test_another_tenants_key_is_not_found(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller, system_headers: dict[str, str]
) -> None:
    owner, stranger = await register(), await register()
    created = await _create(client, as_caller(owner.identity()))

    response = await client.delete(f"/v1/api-keys/{created['id']}", headers=as_caller(stranger.identity()))
    listed = await client.get("/v1/api-keys", headers=as_caller(stranger.identity()))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert listed.json()["items"] == []
    still_valid = await client.post(
        "/internal/v1/api-keys/verify", json={"key": created["key"]}, headers=system_headers
    )
    assert still_valid.status_code == 200


async def test_members_see_their_own_keys_and_owners_see_the_tenants(
    client: httpx.AsyncClient, register: Register, add_member: AddMember, as_caller: AsCaller
) -> None:
    owner = await register()
    member = await add_member(owner)
    owners_key = await _create(client, as_caller(owner.identity()), name="owner's")
    members_key = await _create(client, as_caller(member.identity()), name="member's")

    member_view = (await client.get("/v1/api-keys", headers=as_caller(member.identity()))).json()
    owner_view = (await client.get("/v1/api-keys", headers=as_caller(owner.identity()))).json()
    member_deletes_owners = await client.delete(
        f"/v1/api-keys/{owners_key['id']}", headers=as_caller(member.identity())
    )
    owner_deletes_members = await client.delete(
        f"/v1/api-keys/{members_key['id']}", headers=as_caller(owner.identity())
    )

    assert [k["id"] for k in member_view["items"]] == [members_key["id"]]
    assert {k["id"] for k in owner_view["items"]} == {owners_key["id"], members_key["id"]}
    assert member_deletes_owners.status_code == 404
    assert owner_deletes_members.status_code == 204


async def test_an_api_key_cannot_create_api_keys(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller
) -> None:
    account = await register()

    response = await client.post(
        "/v1/api-keys", json={"name": "escalate"}, headers=as_caller(account.identity(method="api_key"))
    )

    assert response.status_code == 403


async def test_create_validates_name_and_scopes(
    client: httpx.AsyncClient, register: Register, as_caller: AsCaller
) -> None:
    account = await register()
    headers = as_caller(account.identity())

    for body in ({}, {"name": ""}, {"name": "x", "scopes": ["has space"]}, {"name": "x", "scopes": "a"}):
        response = await client.post("/v1/api-keys", json=body, headers=headers)

        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_argument"


async def test_api_keys_need_an_identity(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/api-keys")).status_code == 401
    assert (await client.post("/v1/api-keys", json={"name": "x"})).status_code == 401
    assert (await client.delete(f"/v1/api-keys/{uuid.uuid4()}")).status_code == 401
