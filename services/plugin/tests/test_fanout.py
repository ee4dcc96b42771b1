"""``plugin`` fanout events: published on install, update and remove, and consumed by every replica
to drop its cached tool definitions, so a change made through one instance is seen by another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
import pytest
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client
from coca_plugin.app import create_app

from .conftest import Tenant, make_settings

RESOLVE = "/internal/v1/tools:resolve"


@pytest.fixture(scope="module")
async def replica(migrated: LocalInfra) -> AsyncIterator[httpx.AsyncClient]:
    """A second instance whose cache would hold entries for 10 minutes without the events."""
    async with asgi_client(create_app(make_settings(migrated, tool_cache_ttl_s=600))) as http:
        yield http


async def _description(
    http: httpx.AsyncClient, headers: dict[str, str], tenant: Tenant, ident: str
) -> str | None:
    body = {"tenant_id": tenant.id, "tool_ids": [ident]}
    tools = (await http.post(RESOLVE, json=body, headers=headers)).json()["tools"]
    return str(tools[0]["function"]["description"]) if tools else None


async def _eventually(check: Any, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.05)


async def test_an_update_through_one_instance_invalidates_another_instances_cache(
    client: httpx.AsyncClient,
    replica: httpx.AsyncClient,
    system_headers: dict[str, str],
    tenant: Tenant,
    register: Any,
    db: asyncpg.Connection,
) -> None:
    plugin = await register({"forecast": "/echo"})
    ident = f"{plugin['name']}__forecast"
    # The registration's own announcement must reach the replica before it caches the tool: arriving
    # later, it would (rightly) drop that cache entry and hide whether the cache is real.
    await asyncio.sleep(1.0)
    assert await _description(replica, system_headers, tenant, ident) == "The forecast tool."
    # Behind the service's back: the replica keeps serving its cached copy.
    tools = orjson.loads(await db.fetchval("SELECT tools FROM plugins WHERE id = $1", plugin["id"]))
    tools[0]["description"] = "Changed in the database only."
    await db.execute(
        "UPDATE plugins SET tools = $2::jsonb WHERE id = $1", plugin["id"], orjson.dumps(tools).decode()
    )
    assert await _description(replica, system_headers, tenant, ident) == "The forecast tool."

    tools[0]["description"] = "Changed through the API."
    changed = await client.patch(
        f"/v1/plugins/{plugin['id']}", json={"tools": tools}, headers=tenant.headers()
    )
    assert changed.status_code == 200, changed.text

    async def replica_sees_it() -> bool:
        return await _description(replica, system_headers, tenant, ident) == "Changed through the API."

    await _eventually(replica_sees_it)


async def test_a_removal_through_one_instance_reaches_another_instances_cache(
    client: httpx.AsyncClient,
    replica: httpx.AsyncClient,
    system_headers: dict[str, str],
    tenant: Tenant,
    register: Any,
) -> None:
    plugin = await register({"forecast": "/echo"})
    ident = f"{plugin['name']}__forecast"
    assert await _description(replica, system_headers, tenant, ident) is not None
    assert (await client.delete(f"/v1/plugins/{plugin['id']}", headers=tenant.headers())).status_code == 204

    async def replica_forgot_it() -> bool:
        return await _description(replica, system_headers, tenant, ident) is None

    await _eventually(replica_forgot_it)


async def test_install_update_and_remove_publish_plugin_events(
    client: httpx.AsyncClient, tenant: Tenant, register: Any, migrated: LocalInfra
) -> None:
    connection = await aio_pika.connect(migrated.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind("plugin")
        plugin = await register({"forecast": "/echo"})
        url = f"/v1/plugins/{plugin['id']}"
        await client.patch(url, json={"description": "v2"}, headers=tenant.headers())
        await client.delete(url, headers=tenant.headers())
        envelopes = []
        async with asyncio.timeout(10):
            while len(envelopes) < 3:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                envelope = orjson.loads(message.body)
                if envelope["subject"] == plugin["id"]:
                    envelopes.append(envelope)
    assert [e["type"] for e in envelopes] == ["plugin.installed", "plugin.updated", "plugin.removed"]
    assert {e["tenant_id"] for e in envelopes} == {tenant.id}
    assert [e["data"]["version"] for e in envelopes] == [1, 2, 2]
    assert envelopes[0]["data"]["tool_ids"] == [f"{plugin['name']}__forecast"]
    assert envelopes[0]["source"] == "plugin"
