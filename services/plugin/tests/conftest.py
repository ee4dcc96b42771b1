"""Fixtures for the plugin service's tests: the app in-process over real PostgreSQL and RabbitMQ,
and tool endpoints served by a local aiohttp app on a free port.

Test settings allow-list 127.0.0.1 (where the endpoints run) and shorten the tool timeout to 1 s;
``default_client`` runs a second instance with the default egress policy (nothing private).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web
from coca_platform.identity import Identity
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import (
    asgi_client,
    migrate_for_tests,
    schema_connection,
    serve_aiohttp,
    signed_headers,
)
from coca_plugin.app import create_app
from coca_plugin.settings import Settings

RESPONSE_LIMIT = 4096
OBJECT = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def make_settings(infra: LocalInfra, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": infra.database_url,
        "amqp_url": infra.amqp_url,
        "egress_allowed_hosts": "127.0.0.1",
        "tool_timeout_s": 1,
        "tool_max_response_bytes": RESPONSE_LIMIT,
        "tool_max_args_bytes": 1024,
        "db_pool_max": 4,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="session")
async def migrated(infra: LocalInfra) -> LocalInfra:
    await migrate_for_tests(infra.database_url, schema="coca_plugin", package="coca_plugin")
    return infra


@pytest.fixture(scope="session")
def settings(migrated: LocalInfra) -> Settings:
    return make_settings(migrated)


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings)) as http:
        yield http


@pytest.fixture(scope="session")
async def default_client(migrated: LocalInfra) -> AsyncIterator[httpx.AsyncClient]:
    """Another instance, with the default egress policy (no allow-list, nothing private)."""
    async with asgi_client(create_app(make_settings(migrated, egress_allowed_hosts=""))) as http:
        yield http


@pytest.fixture(scope="session")
async def db(migrated: LocalInfra) -> AsyncIterator[asyncpg.Connection]:
    async with schema_connection(migrated.database_url, "coca_plugin") as conn:
        yield conn


@dataclass
class Tenant:
    secret: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def headers(self, role: str = "admin") -> dict[str, str]:
        return signed_headers(Identity(self.id, self.user_id, role=role), self.secret)


@pytest.fixture
def tenant(settings: Settings) -> Tenant:
    return Tenant(settings.internal_secret.get_secret_value())


@pytest.fixture
def other_tenant(settings: Settings) -> Tenant:
    return Tenant(settings.internal_secret.get_secret_value())


@pytest.fixture
def system_headers(settings: Settings) -> dict[str, str]:
    identity = Identity(tenant_id="-", user_id="service:agent", role="system")
    return signed_headers(identity, settings.internal_secret.get_secret_value())


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]


class ToolEndpoints:
    """Tool endpoints on 127.0.0.1: ``/echo`` answers with what it got, the others misbehave."""

    def __init__(self) -> None:
        self.url = ""
        self.received: list[Received] = []

    def app(self) -> web.Application:
        app = web.Application()
        for path, handler in {
            "/echo": self._echo,
            "/text": self._text,
            "/fail": self._fail,
            "/slow": self._slow,
            "/big": self._big,
            "/to-metadata": self._to_metadata,
            "/to-loopback": self._to_loopback,
        }.items():
            app.router.add_post(path, handler)
        return app

    async def _record(self, request: web.Request) -> Received:
        got = Received(request.path, await request.read(), dict(request.headers))
        self.received.append(got)
        return got

    async def _echo(self, request: web.Request) -> web.Response:
        got = await self._record(request)
        return web.json_response({"echo": await request.json(), "authorized": "Authorization" in got.headers})

    async def _text(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="sunny, 21 °C")

    async def _fail(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"detail": "upstream exploded"}, status=500)

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.sleep(3)
        return web.json_response({})

    async def _big(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(body=b"x" * (RESPONSE_LIMIT + 1), content_type="text/plain")

    async def _to_metadata(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("http://169.254.169.254/latest/meta-data/iam/")

    async def _to_loopback(self, request: web.Request) -> web.Response:
        port = request.url.port
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.2:{port}/echo")

    def for_path(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@pytest.fixture(scope="session")
async def endpoints() -> AsyncIterator[ToolEndpoints]:
    served = ToolEndpoints()
    async with serve_aiohttp(served.app()) as url:
        served.url = url
        yield served


def tool(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The {name} tool.",
        "parameters": OBJECT,
        "endpoint_url": url,
    } | fields


@pytest.fixture
def register(client: httpx.AsyncClient, tenant: Tenant, endpoints: ToolEndpoints) -> Any:
    """Register a plugin (unique name) in ``tenant`` whose tools are ``{tool name: endpoint path}``."""

    async def make(
        tools: dict[str, str] | None = None, *, on: Tenant | None = None, **fields: Any
    ) -> dict[str, Any]:
        specs = [tool(n, f"{endpoints.url}{p}") for n, p in (tools or {"echo": "/echo"}).items()]
        body = {"name": f"p-{uuid.uuid4().hex[:12]}", "description": "Test plugin.", "tools": specs} | fields
        response = await client.post("/v1/plugins", json=body, headers=(on or tenant).headers())
        assert response.status_code == 201, response.text
        return dict(response.json())

    return make
