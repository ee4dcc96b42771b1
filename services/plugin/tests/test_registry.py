"""Registering, listing, reading, changing and removing plugins: validation, roles, tenant
isolation, and the tool secret encrypted at rest and never returned."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from coca_platform.crypto import SecretBox
from coca_plugin.settings import Settings

from .conftest import OBJECT, Tenant, ToolEndpoints, tool


async def test_register_returns_the_plugin_with_stable_tool_ids(
    client: httpx.AsyncClient, tenant: Tenant, endpoints: ToolEndpoints
) -> None:
    body = {
        "name": "weather",
        "description": "Weather lookups.",
        "tools": [tool("get_forecast", f"{endpoints.url}/echo"), tool("alerts", f"{endpoints.url}/text")],
    }
    response = await client.post("/v1/plugins", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    plugin = response.json()
    assert plugin["name"] == "weather"
    assert [t["id"] for t in plugin["tools"]] == ["weather__get_forecast", "weather__alerts"]
    assert plugin["tools"][0]["parameters"] == OBJECT
    assert (plugin["has_secret"], plugin["version"]) == (False, 1)
    fetched = await client.get(f"/v1/plugins/{plugin['id']}", headers=tenant.headers(role="member"))
    assert fetched.status_code == 200
    assert fetched.json() == plugin


async def test_register_rejects_a_duplicate_name_in_the_tenant(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, register: Any
) -> None:
    first = await register()
    same = {"name": first["name"], "tools": [tool("other", "http://example.com/x")]}
    again = await client.post("/v1/plugins", json=same, headers=tenant.headers())
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_exists"
    assert (await register(name=first["name"], on=other_tenant))["name"] == first["name"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"tools": []}, "tools"),
        ({"tools": [tool("bad name", "http://example.com/x")]}, "name"),
        ({"tools": [tool("t", "http://example.com/x", parameters={"type": "array"})]}, "type 'object'"),
        (
            {"tools": [tool("t", "http://example.com/x", parameters={"type": "object", "properties": 3})]},
            "valid",
        ),
        (
            {
                "tools": [
                    tool("t", "http://example.com/x", parameters={"type": "object", "$ref": "http://x/s"})
                ]
            },
            "reference",
        ),
        ({"tools": [tool("t", "http://example.com/x"), tool("t", "http://example.com/y")]}, "unique"),
        ({"tools": [tool("t", "http://example.com/x", method="GET")]}, "method"),
        ({"secret": "has spaces inside"}, "secret"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_register_rejects_invalid_plugins(
    client: httpx.AsyncClient, tenant: Tenant, change: dict[str, Any], message: str
) -> None:
    body = {"name": "valid-name", "tools": [tool("t", "http://example.com/x")]} | change
    response = await client.post("/v1/plugins", json=body, headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert message in response.text


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/tool",
        "file:///etc/passwd",
        "http://user:password@example.com/tool",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/tool",
    ],
)
async def test_register_refuses_unsafe_endpoint_urls(
    client: httpx.AsyncClient, tenant: Tenant, url: str
) -> None:
    body = {"name": "unsafe", "tools": [tool("t", url)]}
    response = await client.post("/v1/plugins", json=body, headers=tenant.headers())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "egress_refused"


async def test_register_refuses_loopback_under_the_default_policy(
    default_client: httpx.AsyncClient, tenant: Tenant, endpoints: ToolEndpoints
) -> None:
    body = {"name": "loopback", "tools": [tool("t", f"{endpoints.url}/echo")]}
    response = await default_client.post("/v1/plugins", json=body, headers=tenant.headers())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "egress_refused"


async def test_members_can_read_but_not_change_plugins(
    client: httpx.AsyncClient, tenant: Tenant, register: Any
) -> None:
    plugin = await register()
    member = tenant.headers(role="member")
    body = {"name": "mine", "tools": [tool("t", "http://example.com/x")]}
    assert (await client.post("/v1/plugins", json=body, headers=member)).status_code == 403
    assert (await client.patch(f"/v1/plugins/{plugin['id']}", json={}, headers=member)).status_code == 403
    assert (await client.delete(f"/v1/plugins/{plugin['id']}", headers=member)).status_code == 403
    assert (await client.get("/v1/plugins", headers=member)).status_code == 200


async def test_requests_without_a_signed_identity_are_rejected(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/plugins")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_other_tenants_plugins_are_not_found(
    client: httpx.AsyncClient, other_tenant: Tenant, register: Any
) -> None:
    plugin = await register()
    headers = other_tenant.headers()
    for response in (
        await client.get(f"/v1/plugins/{plugin['id']}", headers=headers),
        await client.patch(f"/v1/plugins/{plugin['id']}", json={"description": "x"}, headers=headers),
        await client.delete(f"/v1/plugins/{plugin['id']}", headers=headers),
        await client.post(f"/v1/plugins/{plugin['id']}/tools/echo:invoke", json={}, headers=headers),
    ):
        assert response.status_code == 404, response.text
    listed = await client.get("/v1/plugins", headers=headers)
    assert listed.json() == {"items": [], "next_after": None}


async def test_list_pages_through_the_tenants_plugins_by_name(
    client: httpx.AsyncClient, tenant: Tenant, register: Any
) -> None:
    names = sorted([(await register())["name"] for _ in range(3)])
    first = (await client.get("/v1/plugins", params={"limit": 2}, headers=tenant.headers())).json()
    assert [p["name"] for p in first["items"]] == names[:2]
    rest = await client.get("/v1/plugins", params={"after": first["next_after"]}, headers=tenant.headers())
    assert [p["name"] for p in rest.json()["items"]] == names[2:]
    assert rest.json()["next_after"] is None


async def test_secret_is_encrypted_at_rest_and_never_returned(
    client: httpx.AsyncClient, tenant: Tenant, register: Any, db: asyncpg.Connection, settings: Settings
) -> None:
    plugin = await register(secret="tok-plaintext-4711")
    assert plugin["has_secret"] is True
    assert "tok-plaintext-4711" not in str(plugin)
    stored = await db.fetchval("SELECT secret_ciphertext FROM plugins WHERE id = $1", plugin["id"])
    row_text = str(await db.fetchrow("SELECT * FROM plugins WHERE id = $1", plugin["id"]))
    assert "tok-plaintext-4711" not in row_text
    assert SecretBox(settings.secrets_keys.get_secret_value()).decrypt(stored) == "tok-plaintext-4711"
    listed = await client.get("/v1/plugins", headers=tenant.headers())
    assert "tok-plaintext-4711" not in listed.text


async def test_update_replaces_tools_keeps_or_clears_the_secret_and_bumps_the_version(
    client: httpx.AsyncClient, tenant: Tenant, register: Any, db: asyncpg.Connection, endpoints: ToolEndpoints
) -> None:
    plugin = await register(secret="first-secret")
    url = f"/v1/plugins/{plugin['id']}"
    changed = await client.patch(
        url,
        json={"description": "New.", "tools": [tool("lookup", f"{endpoints.url}/text")]},
        headers=tenant.headers(),
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["description"], body["version"], body["has_secret"]) == ("New.", 2, True)
    assert [t["id"] for t in body["tools"]] == [f"{plugin['name']}__lookup"]
    cleared = await client.patch(url, json={"secret": None}, headers=tenant.headers())
    assert (cleared.json()["has_secret"], cleared.json()["version"]) == (False, 3)
    assert await db.fetchval("SELECT secret_ciphertext FROM plugins WHERE id = $1", plugin["id"]) is None


async def test_delete_removes_the_plugin(client: httpx.AsyncClient, tenant: Tenant, register: Any) -> None:
    plugin = await register()
    response = await client.delete(f"/v1/plugins/{plugin['id']}", headers=tenant.headers())
    assert response.status_code == 204
    assert (await client.get(f"/v1/plugins/{plugin['id']}", headers=tenant.headers())).status_code == 404
    again = await client.delete(f"/v1/plugins/{plugin['id']}", headers=tenant.headers())
    assert again.status_code == 404
