"""The agent service's endpoints: OpenAI function definitions, and invocations whose failures are
results the LLM reads. Only signed system callers may use them."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from .conftest import OBJECT, Tenant

RESOLVE = "/internal/v1/tools:resolve"
INVOKE = "/internal/v1/tools:invoke"


async def _invoke(
    client: httpx.AsyncClient, headers: dict[str, str], tenant: Tenant, tool_id: str, arguments: str
) -> dict[str, Any]:
    body = {"tenant_id": tenant.id, "tool_id": tool_id, "arguments": arguments}
    response = await client.post(INVOKE, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_resolve_gives_openai_function_definitions_and_the_missing_ids(
    client: httpx.AsyncClient, system_headers: dict[str, str], tenant: Tenant, register: Any
) -> None:
    plugin = await register({"forecast": "/echo", "text": "/text"})
    forecast = f"{plugin['name']}__forecast"
    wanted = [forecast, f"{plugin['name']}__absent", "nope__x", "not-an-id"]
    response = await client.post(
        RESOLVE, json={"tenant_id": tenant.id, "tool_ids": wanted}, headers=system_headers
    )
    assert response.status_code == 200
    assert response.json() == {
        "tools": [
            {
                "type": "function",
                "function": {"name": forecast, "description": "The forecast tool.", "parameters": OBJECT},
            }
        ],
        "missing": wanted[1:],
    }


async def test_resolve_sees_only_the_named_tenants_tools(
    client: httpx.AsyncClient, system_headers: dict[str, str], other_tenant: Tenant, register: Any
) -> None:
    plugin = await register()
    ident = f"{plugin['name']}__echo"
    body = {"tenant_id": other_tenant.id, "tool_ids": [ident]}
    response = await client.post(RESOLVE, json=body, headers=system_headers)
    assert response.json() == {"tools": [], "missing": [ident]}


async def test_invoke_returns_the_tools_answer_as_content(
    client: httpx.AsyncClient, system_headers: dict[str, str], tenant: Tenant, register: Any
) -> None:
    plugin = await register({"forecast": "/echo"}, secret="agent-secret")
    result = await _invoke(client, system_headers, tenant, f"{plugin['name']}__forecast", '{"city": "Oslo"}')
    assert result["is_error"] is False
    assert orjson.loads(result["content"]) == {"echo": {"city": "Oslo"}, "authorized": True}


@pytest.mark.parametrize(
    ("tool", "arguments", "code"),
    [
        ("forecast", '{"city": ', "invalid_arguments"),
        ("forecast", '{"city": 3}', "invalid_arguments"),
        ("forecast", "", "invalid_arguments"),  # empty means {}, which lacks "city"
        ("forecast", '{"city": "' + "x" * 2000 + '"}', "payload_too_large"),
        ("absent", "{}", "not_found"),
        ("slow", '{"city": "x"}', "tool_timeout"),
        ("big", '{"city": "x"}', "response_too_large"),
        ("hop", '{"city": "x"}', "egress_refused"),
        ("fail", '{"city": "x"}', "tool_error"),
    ],
)
async def test_invoke_failures_are_error_results_the_llm_can_read(
    client: httpx.AsyncClient,
    system_headers: dict[str, str],
    tenant: Tenant,
    register: Any,
    tool: str,
    arguments: str,
    code: str,
) -> None:
    plugin = await register(
        {"forecast": "/echo", "slow": "/slow", "big": "/big", "hop": "/to-metadata", "fail": "/fail"}
    )
    result = await _invoke(client, system_headers, tenant, f"{plugin['name']}__{tool}", arguments)
    assert result["is_error"] is True
    error = orjson.loads(result["content"])
    assert error["code"] == code
    assert error["error"]


async def test_internal_endpoints_require_a_system_identity(
    client: httpx.AsyncClient, tenant: Tenant, register: Any
) -> None:
    plugin = await register()
    resolve = {"tenant_id": tenant.id, "tool_ids": [f"{plugin['name']}__echo"]}
    invoke = {"tenant_id": tenant.id, "tool_id": f"{plugin['name']}__echo", "arguments": "{}"}
    for path, body in ((RESOLVE, resolve), (INVOKE, invoke)):
        anonymous = await client.post(path, json=body)
        assert anonymous.status_code == 401
        for role in ("owner", "admin", "member"):
            response = await client.post(path, json=body, headers=tenant.headers(role=role))
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "permission_denied"
