"""``PluginTools`` against the real plugin service (under uvicorn on a free port, real PostgreSQL and
RabbitMQ) and a real tool endpoint: definitions for the LLM, invocations, and failures as results."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from coca_agent.models import ToolCall
from coca_agent.plugin_tools import PluginTools, open_plugin_tools
from coca_platform.errors import Unauthenticated, Unavailable
from coca_platform.identity import Identity
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import free_port, migrate_for_tests, serve_aiohttp, serve_asgi, signed_headers
from coca_plugin.app import create_app
from coca_plugin.settings import Settings as PluginSettings

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
async def plugin_service(infra: LocalInfra) -> AsyncIterator[tuple[str, PluginSettings]]:
    """The plugin service on a free port; its egress policy admits the local tool endpoint."""
    await migrate_for_tests(infra.database_url, schema="coca_plugin", package="coca_plugin")
    settings = PluginSettings(
        environment="test",
        database_url=infra.database_url,
        amqp_url=infra.amqp_url,
        egress_allowed_hosts="127.0.0.1",
        tool_timeout_s=1,
        db_pool_max=2,
    )
    async with serve_asgi(create_app(settings)) as url:
        yield url.removeprefix("http://"), settings


@pytest.fixture(scope="module")
async def endpoint() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A weather tool endpoint; the list records what it received."""
    received: list[dict[str, Any]] = []

    async def forecast(request: web.Request) -> web.Response:
        received.append({"body": await request.json(), "authorization": request.headers.get("Authorization")})
        return web.json_response({"forecast": "sunny"})

    app = web.Application()
    app.router.add_post("/forecast", forecast)
    async with serve_aiohttp(app) as url:
        yield url, received


@pytest.fixture
async def tools(plugin_service: tuple[str, PluginSettings]) -> AsyncIterator[PluginTools]:
    addr, settings = plugin_service
    async with open_plugin_tools(addr, settings.internal_secret.get_secret_value(), timeout_s=5) as client:
        yield client


async def _register(
    plugin_service: tuple[str, PluginSettings], endpoint_url: str, tenant_id: uuid.UUID
) -> list[str]:
    """A plugin in the tenant, registered as an admin would (through the plugin service's API)."""
    addr, settings = plugin_service
    headers = signed_headers(
        Identity(str(tenant_id), str(uuid.uuid4()), role="admin"), settings.internal_secret.get_secret_value()
    )
    body = {
        "name": f"weather-{uuid.uuid4().hex[:8]}",
        "tools": [
            {
                "name": "forecast",
                "description": "Forecast.",
                "parameters": SCHEMA,
                "endpoint_url": endpoint_url,
            }
        ],
        "secret": "tool-token",
    }
    async with httpx.AsyncClient(base_url=f"http://{addr}") as http:
        response = await http.post("/v1/plugins", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return [t["id"] for t in response.json()["tools"]]


async def test_definitions_describe_the_agents_tools_in_openai_format(
    tools: PluginTools, plugin_service: tuple[str, PluginSettings], endpoint: tuple[str, Any]
) -> None:
    tenant_id = uuid.uuid4()
    (forecast,) = await _register(plugin_service, f"{endpoint[0]}/forecast", tenant_id)
    definitions = await tools.definitions(tenant_id, [forecast, "gone__tool"])
    assert definitions == [
        {"type": "function", "function": {"name": forecast, "description": "Forecast.", "parameters": SCHEMA}}
    ]
    assert await tools.definitions(uuid.uuid4(), [forecast]) == []  # another tenant's agent


async def test_invoke_runs_the_tool_and_returns_its_answer(
    tools: PluginTools, plugin_service: tuple[str, PluginSettings], endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    tenant_id = uuid.uuid4()
    (forecast,) = await _register(plugin_service, f"{endpoint[0]}/forecast", tenant_id)
    result = await tools.invoke(tenant_id, [forecast], ToolCall("call-1", forecast, '{"city": "Oslo"}'))
    assert result.is_error is False
    assert orjson.loads(result.content) == {"forecast": "sunny"}
    assert endpoint[1][-1] == {"body": {"city": "Oslo"}, "authorization": "Bearer tool-token"}


async def test_invoke_refuses_a_tool_the_agent_was_not_given(
    tools: PluginTools, plugin_service: tuple[str, PluginSettings], endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    tenant_id = uuid.uuid4()
    (forecast,) = await _register(plugin_service, f"{endpoint[0]}/forecast", tenant_id)
    before = len(endpoint[1])
    result = await tools.invoke(tenant_id, ["other__tool"], ToolCall("call-1", forecast, '{"city": "Oslo"}'))
    assert result.is_error is True
    assert orjson.loads(result.content)["code"] == "tool_not_allowed"
    assert len(endpoint[1]) == before


async def test_a_failing_tool_call_is_an_error_result(
    tools: PluginTools, plugin_service: tuple[str, PluginSettings], endpoint: tuple[str, Any]
) -> None:
    tenant_id = uuid.uuid4()
    (forecast,) = await _register(plugin_service, f"{endpoint[0]}/forecast", tenant_id)
    result = await tools.invoke(tenant_id, [forecast], ToolCall("call-1", forecast, '{"town": "Oslo"}'))
    assert result.is_error is True
    assert orjson.loads(result.content)["code"] == "invalid_arguments"


async def test_an_unreachable_plugin_service_fails_definitions_but_gives_error_results() -> None:
    async with open_plugin_tools(f"127.0.0.1:{free_port()}", "secret", timeout_s=2) as tools:
        with pytest.raises(Unavailable):
            await tools.definitions(uuid.uuid4(), ["weather__forecast"])
        call = ToolCall("call-1", "weather__forecast", "{}")
        result = await tools.invoke(uuid.uuid4(), ["weather__forecast"], call)
    assert result.is_error is True
    assert orjson.loads(result.content)["code"] == "unavailable"


async def test_a_wrong_internal_secret_is_refused_by_the_plugin_service(
    plugin_service: tuple[str, PluginSettings],
) -> None:
    async with open_plugin_tools(plugin_service[0], "not-the-secret", timeout_s=5) as tools:
        with pytest.raises(Unauthenticated):
            await tools.definitions(uuid.uuid4(), ["weather__forecast"])
