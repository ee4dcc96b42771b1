"""Invoking a tool to test it: arguments checked against its schema, the secret sent as a bearer
token, and every way an endpoint can fail or be refused (after DNS and on redirects)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from coca_platform.testing import free_port

from .conftest import Tenant, ToolEndpoints, tool


async def _invoke(
    client: httpx.AsyncClient, tenant: Tenant, plugin: dict[str, Any], name: str, arguments: Any
) -> httpx.Response:
    url = f"/v1/plugins/{plugin['id']}/tools/{name}:invoke"
    return await client.post(url, json={"arguments": arguments}, headers=tenant.headers())


async def test_invoke_sends_arguments_and_secret_and_returns_the_json_answer(
    client: httpx.AsyncClient, tenant: Tenant, register: Any, endpoints: ToolEndpoints
) -> None:
    plugin = await register({"forecast": "/echo"}, secret="tok-4711")
    before = len(endpoints.for_path("/echo"))
    response = await _invoke(client, tenant, plugin, "forecast", {"city": "Lisbon"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tool_id"] == f"{plugin['name']}__forecast"
    assert (body["status"], body["result"]) == (200, {"echo": {"city": "Lisbon"}, "authorized": True})
    assert body["duration_ms"] >= 0
    received = endpoints.for_path("/echo")[before]
    assert received.headers["Authorization"] == "Bearer tok-4711"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Coca-Tool-Id"] == body["tool_id"]
    assert orjson.loads(received.body) == {"city": "Lisbon"}


async def test_invoke_without_a_secret_sends_no_authorization(
    client: httpx.AsyncClient, tenant: Tenant, register: Any
) -> None:
    plugin = await register({"forecast": "/echo"})
    response = await _invoke(client, tenant, plugin, "forecast", {"city": "Porto"})
    assert response.json()["result"]["authorized"] is False


async def test_text_answers_and_error_statuses_are_returned_as_they_are(
    client: httpx.AsyncClient, tenant: Tenant, register: Any
) -> None:
    plugin = await register({"text": "/text", "fail": "/fail"})
    text = await _invoke(client, tenant, plugin, "text", {"city": "Faro"})
    assert (text.status_code, text.json()["status"], text.json()["result"]) == (200, 200, "sunny, 21 °C")
    failed = await _invoke(client, tenant, plugin, "fail", {"city": "Faro"})
    assert failed.status_code == 200
    assert (failed.json()["status"], failed.json()["result"]) == (500, {"detail": "upstream exploded"})


@pytest.mark.parametrize("arguments", [{}, {"city": 7}, {"city": ["x"]}])
async def test_arguments_that_violate_the_schema_are_rejected_before_any_call(
    client: httpx.AsyncClient, tenant: Tenant, register: Any, endpoints: ToolEndpoints, arguments: Any
) -> None:
    plugin = await register({"forecast": "/echo"})
    before = len(endpoints.received)
    response = await _invoke(client, tenant, plugin, "forecast", arguments)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_arguments"
    assert len(endpoints.received) == before


async def test_arguments_over_the_limit_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, register: Any
) -> None:
    plugin = await register({"forecast": "/echo"})
    response = await _invoke(client, tenant, plugin, "forecast", {"city": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_unknown_tool_is_not_found(client: httpx.AsyncClient, tenant: Tenant, register: Any) -> None:
    plugin = await register({"forecast": "/echo"})
    response = await _invoke(client, tenant, plugin, "nope", {"city": "x"})
    assert response.status_code == 404


async def test_a_slow_endpoint_is_a_tool_timeout(
    client: httpx.AsyncClient, tenant: Tenant, register: Any
) -> None:
    plugin = await register({"slow": "/slow"})
    response = await _invoke(client, tenant, plugin, "slow", {"city": "x"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "tool_timeout"


async def test_an_oversized_answer_is_response_too_large(
    client: httpx.AsyncClient, tenant: Tenant, register: Any
) -> None:
    plugin = await register({"big": "/big"})
    response = await _invoke(client, tenant, plugin, "big", {"city": "x"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "response_too_large"


async def test_an_unreachable_endpoint_is_tool_unavailable(
    client: httpx.AsyncClient, tenant: Tenant, register: Any, endpoints: ToolEndpoints
) -> None:
    plugin = await register()
    body = {"tools": [tool("gone", f"http://127.0.0.1:{free_port()}/tool")]}
    await client.patch(f"/v1/plugins/{plugin['id']}", json=body, headers=tenant.headers())
    response = await _invoke(client, tenant, plugin, "gone", {"city": "x"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "tool_unavailable"


@pytest.mark.parametrize("path", ["/to-metadata", "/to-loopback"])
async def test_a_redirect_to_a_private_address_is_refused(
    client: httpx.AsyncClient, tenant: Tenant, register: Any, endpoints: ToolEndpoints, path: str
) -> None:
    plugin = await register({"hop": path})
    before = len(endpoints.for_path("/echo"))
    response = await _invoke(client, tenant, plugin, "hop", {"city": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "egress_refused"
    assert len(endpoints.for_path("/echo")) == before


async def _insert_plugin(db: asyncpg.Connection, tenant: Tenant, url: str) -> dict[str, Any]:
    """A plugin row written directly: as if registered while an operator allowed the address."""
    tools = [tool("t", url)]
    plugin_id = await db.fetchval(
        "INSERT INTO plugins (tenant_id, name, description, tools, created_by)"
        " VALUES ($1, $2, '', $3::jsonb, 'test') RETURNING id",
        uuid.UUID(tenant.id),
        f"p-{uuid.uuid4().hex[:12]}",
        orjson.dumps(tools).decode(),
    )
    return {"id": str(plugin_id)}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/echo",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:{port}/echo",
        "http://[::ffff:127.0.0.1]:{port}/echo",
    ],
)
async def test_the_default_policy_refuses_loopback_and_metadata_when_called(
    default_client: httpx.AsyncClient,
    tenant: Tenant,
    endpoints: ToolEndpoints,
    db: asyncpg.Connection,
    url: str,
) -> None:
    port = endpoints.url.rsplit(":", 1)[1]
    plugin = await _insert_plugin(db, tenant, url.format(port=port))
    before = len(endpoints.received)
    response = await _invoke(default_client, tenant, plugin, "t", {"city": "x"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "egress_refused"
    assert len(endpoints.received) == before


async def test_a_name_is_accepted_at_registration_and_refused_when_it_resolves_to_loopback(
    default_client: httpx.AsyncClient, tenant: Tenant, endpoints: ToolEndpoints
) -> None:
    url = endpoints.url.replace("127.0.0.1", "localhost") + "/echo"
    body = {"name": f"p-{uuid.uuid4().hex[:12]}", "tools": [tool("t", url)]}
    created = await default_client.post("/v1/plugins", json=body, headers=tenant.headers())
    assert created.status_code == 201, created.text
    response = await _invoke(default_client, tenant, created.json(), "t", {"city": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "egress_refused"
    assert "loopback" in response.json()["error"]["message"]
