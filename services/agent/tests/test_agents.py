"""Agents: created, listed, read, changed and deleted within a tenant; invisible outside it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

# Fixtures come from conftest.py: `api` is a ChatApi over the in-process app, `tenant` a Tenant.
Api = Any
Tenant = Any


async def test_agent_is_created_read_updated_and_deleted(
    client: httpx.AsyncClient, api: Api, tenant: Tenant
) -> None:
    created = await api.create_agent(tenant, name="  Writer ", tools=["search", "search"], model="m1")
    assert created["name"] == "Writer"
    assert created["tools"] == ["search"]
    assert created["owner_id"] == tenant.user_id
    path = f"/v1/agents/{created['id']}"

    assert (await client.get(path, headers=tenant.headers())).json() == created

    patched = await client.patch(
        path, json={"system_prompt": "Be kind.", "model": None}, headers=tenant.headers()
    )
    assert patched.status_code == 200
    assert patched.json()["system_prompt"] == "Be kind."
    assert patched.json()["model"] is None
    assert patched.json()["name"] == "Writer"

    listed = await client.get("/v1/agents", headers=tenant.headers())
    assert [a["id"] for a in listed.json()["items"]] == [created["id"]]

    assert (await client.delete(path, headers=tenant.headers())).status_code == 204
    assert (await client.get(path, headers=tenant.headers())).status_code == 404
    assert (await client.get("/v1/agents", headers=tenant.headers())).json()["items"] == []


async def test_another_tenants_agent_is_not_found(
    client: httpx.AsyncClient, api: Api, tenant: Tenant, new_tenant: Callable[[], Tenant]
) -> None:
    agent = await api.create_agent(tenant)
    stranger = new_tenant()
    path = f"/v1/agents/{agent['id']}"
    for response in (
        await client.get(path, headers=stranger.headers(role="owner")),
        await client.patch(path, json={"name": "x"}, headers=stranger.headers(role="owner")),
        await client.delete(path, headers=stranger.headers(role="owner")),
        await client.post("/v1/conversations", json={"agent_id": agent["id"]}, headers=stranger.headers()),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert (await client.get("/v1/agents", headers=stranger.headers())).json()["items"] == []
    assert (await client.get(path, headers=tenant.headers())).json()["name"] == agent["name"]


async def test_only_the_owner_or_an_admin_may_change_an_agent(
    client: httpx.AsyncClient, api: Api, tenant: Tenant
) -> None:
    agent = await api.create_agent(tenant)
    path = f"/v1/agents/{agent['id']}"
    colleague = str(uuid.uuid4())
    assert (await client.get(path, headers=tenant.headers(user_id=colleague))).status_code == 200
    denied = await client.patch(path, json={"name": "mine"}, headers=tenant.headers(user_id=colleague))
    assert denied.status_code == 403
    admin = await client.patch(
        path, json={"name": "ours"}, headers=tenant.headers(user_id=colleague, role="admin")
    )
    assert admin.json()["name"] == "ours"


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"name": "ok", "tools": ["has space"]},
        {"name": "ok", "knowledge_base_ids": ["not-a-uuid"]},
        {"name": "nul\x00byte"},
        {"system_prompt": "no name"},
    ],
)
async def test_invalid_agent_is_rejected_with_422(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/agents", json=body, headers=tenant.headers())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_argument"


async def test_patch_may_not_null_a_required_field(
    client: httpx.AsyncClient, api: Api, tenant: Tenant
) -> None:
    agent = await api.create_agent(tenant)
    response = await client.patch(f"/v1/agents/{agent['id']}", json={"name": None}, headers=tenant.headers())
    assert response.status_code == 422


async def test_malformed_json_is_a_400(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/agents", content=b"{not json", headers={**tenant.headers(), "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


async def test_requests_without_a_signed_identity_are_401(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/v1/agents", headers={"x-coca-identity": "forged", "x-coca-identity-signature": "0"}
    )
    assert response.status_code == 401


async def test_an_id_that_is_not_a_uuid_is_not_found(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get("/v1/agents/nope", headers=tenant.headers())
    assert response.status_code == 404
