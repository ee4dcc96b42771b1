"""Conversations and posting messages without streaming: access rules, validation, the final reply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from coca_agent.app import create_app
from coca_agent.settings import Settings
from coca_platform.testing import asgi_client

# Fixtures come from conftest.py: `api` is a ChatApi over the in-process app, `tenant` a Tenant.
Api = Any
Tenant = Any


async def test_conversation_is_created_and_read_back(
    client: httpx.AsyncClient, api: Api, tenant: Tenant
) -> None:
    agent = await api.create_agent(tenant)
    created = await client.post(
        "/v1/conversations", json={"agent_id": agent["id"], "title": "Plans"}, headers=tenant.headers()
    )
    assert created.status_code == 201
    body = created.json()
    assert body["agent_id"] == agent["id"]
    assert body["title"] == "Plans"
    fetched = await client.get(f"/v1/conversations/{body['id']}", headers=tenant.headers())
    assert fetched.json() == body
    assert await api.messages(tenant, body["id"]) == []


async def test_conversation_is_hidden_from_other_tenants_and_other_members(
    client: httpx.AsyncClient, api: Api, tenant: Tenant, new_tenant: Callable[[], Tenant]
) -> None:
    conversation_id = await api.create_conversation(tenant)
    stranger, colleague = new_tenant(), str(uuid.uuid4())
    for headers in (stranger.headers(role="owner"), tenant.headers(user_id=colleague)):
        for response in (
            await client.get(f"/v1/conversations/{conversation_id}", headers=headers),
            await client.get(f"/v1/conversations/{conversation_id}/messages", headers=headers),
            await client.post(
                f"/v1/conversations/{conversation_id}/messages", json={"content": "hi"}, headers=headers
            ),
            await client.get(f"/v1/conversations/{conversation_id}/events", headers=headers),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
    admin = tenant.headers(user_id=colleague, role="admin")
    assert (await client.get(f"/v1/conversations/{conversation_id}", headers=admin)).status_code == 200
    assert await api.messages(tenant, conversation_id) == []


async def test_message_without_sse_returns_the_persisted_reply(
    client: httpx.AsyncClient, api: Api, tenant: Tenant, db: asyncpg.Connection
) -> None:
    conversation_id = await api.create_conversation(tenant)
    response = await client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "hello there"},
        headers=tenant.headers(),
    )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["role"] == "assistant"
    assert reply["content"] == "You said: hello there"
    stored = await api.messages(tenant, conversation_id)
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "hello there"),
        ("assistant", reply["content"]),
    ]
    assert stored[1] == reply
    run = await db.fetchrow(
        "SELECT status, prompt_tokens, completion_tokens, finished_at FROM runs WHERE id = $1",
        uuid.UUID(reply["run_id"]),
    )
    assert run["status"] == "completed"
    assert run["completion_tokens"] == 4  # the stand-in's usage: "You said: hello there"
    assert run["prompt_tokens"] > 0
    assert run["finished_at"] is not None


async def test_history_is_sent_with_the_next_message(
    client: httpx.AsyncClient, api: Api, tenant: Tenant
) -> None:
    conversation_id = await api.create_conversation(tenant)
    path = f"/v1/conversations/{conversation_id}/messages"
    await client.post(path, json={"content": "one two three"}, headers=tenant.headers())
    await client.post(path, json={"content": "four"}, headers=tenant.headers())
    runs = await client.get(f"/v1/conversations/{conversation_id}/messages", headers=tenant.headers())
    assert [m["content"] for m in runs.json()["items"]] == [
        "one two three",
        "You said: one two three",
        "four",
        "You said: four",
    ]


@pytest.mark.parametrize(("content", "why"), [("", "empty"), ("   ", "empty"), ("x" * 32_001, "longer than")])
async def test_invalid_content_is_422_and_nothing_is_written(
    client: httpx.AsyncClient, api: Api, tenant: Tenant, db: asyncpg.Connection, content: str, why: str
) -> None:
    conversation_id = await api.create_conversation(tenant)
    response = await client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": content}, headers=tenant.headers()
    )
    assert response.status_code == 422
    assert why in response.json()["error"]["message"]
    assert await api.messages(tenant, conversation_id) == []
    assert (
        await db.fetchval("SELECT count(*) FROM runs WHERE conversation_id = $1", uuid.UUID(conversation_id))
        == 0
    )


async def test_malformed_message_json_is_400(client: httpx.AsyncClient, api: Api, tenant: Tenant) -> None:
    conversation_id = await api.create_conversation(tenant)
    response = await client.post(
        f"/v1/conversations/{conversation_id}/messages",
        content=b'{"content": ',
        headers={**tenant.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert await api.messages(tenant, conversation_id) == []


async def test_llm_error_without_sse_maps_to_503_and_keeps_no_reply(
    client: httpx.AsyncClient, api: Api, tenant: Tenant
) -> None:
    conversation_id = await api.create_conversation(tenant)
    response = await client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "[[error:503]]"},
        headers=tenant.headers(),
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "llm_unavailable"
    assert [m["role"] for m in await api.messages(tenant, conversation_id)] == ["user"]


async def test_message_to_a_conversation_whose_agent_was_deleted_is_409(
    client: httpx.AsyncClient, api: Api, tenant: Tenant
) -> None:
    agent = await api.create_agent(tenant)
    conversation = await client.post(
        "/v1/conversations", json={"agent_id": agent["id"]}, headers=tenant.headers()
    )
    await client.delete(f"/v1/agents/{agent['id']}", headers=tenant.headers())
    response = await client.post(
        f"/v1/conversations/{conversation.json()['id']}/messages",
        json={"content": "hi"},
        headers=tenant.headers(),
    )
    assert response.status_code == 409


async def test_no_first_chunk_within_llm_timeout_fails_the_run_with_504(
    settings: Settings, tenant: Tenant, db: asyncpg.Connection
) -> None:
    impatient = settings.model_copy(update={"llm_timeout_s": 0.5})
    async with asgi_client(create_app(impatient)) as http:
        agent = (await http.post("/v1/agents", json={"name": "a"}, headers=tenant.headers())).json()
        created = await http.post(
            "/v1/conversations", json={"agent_id": agent["id"]}, headers=tenant.headers()
        )
        conversation_id = created.json()["id"]
        response = await http.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"content": "[[stall_after:0]]"},
            headers=tenant.headers(),
        )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "llm_timeout"
    error = await db.fetchval("SELECT error FROM runs WHERE conversation_id = $1", uuid.UUID(conversation_id))
    assert orjson.loads(error)["code"] == "llm_timeout"


async def test_runs_beyond_max_concurrent_runs_are_refused_with_503_and_nothing_written(
    settings: Settings, tenant: Tenant
) -> None:
    async with asgi_client(create_app(settings.model_copy(update={"max_concurrent_runs": 1}))) as http:
        agent = (await http.post("/v1/agents", json={"name": "a"}, headers=tenant.headers())).json()
        paths = []
        for _ in range(2):
            created = await http.post(
                "/v1/conversations", json={"agent_id": agent["id"]}, headers=tenant.headers()
            )
            paths.append(f"/v1/conversations/{created.json()['id']}/messages")
        slow = asyncio.create_task(
            http.post(paths[0], json={"content": "[[tokens:20]] [[delay_ms:50]]"}, headers=tenant.headers())
        )
        async with asyncio.timeout(10):
            while not (await http.get(paths[0], headers=tenant.headers())).json()["items"]:
                await asyncio.sleep(0.02)
        refused = await http.post(paths[1], json={"content": "me too"}, headers=tenant.headers())
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "at_capacity"
        assert (await slow).status_code == 200
        assert (await http.get(paths[1], headers=tenant.headers())).json()["items"] == []
        after = await http.post(paths[1], json={"content": "now"}, headers=tenant.headers())
        assert after.status_code == 200
