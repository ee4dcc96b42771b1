"""Runs streamed over SSE (a real server): event order and ids, Kafka, replay, failures, tools."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from coca_agent.settings import Settings
from coca_platform.observability import JsonFormatter

# Fixtures come from conftest.py: `live` is a ChatApi over the app under uvicorn, `tenant` a Tenant,
# `kafka_events` reads agent.events, `sse` parses an SSE body.
Api = Any
Tenant = Any
Serve = Callable[[Settings], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


def _types(events: list[Any]) -> list[str]:
    return [e.event for e in events]


@pytest.fixture
def run_logs() -> Iterator[io.StringIO]:
    """JSON log lines of the run executor, formatted when emitted (so they carry the live trace id)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("agent"))
    logger = logging.getLogger("coca_agent.runs")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(previous)


async def test_stream_carries_the_run_events_in_order_and_persists_the_reply(
    live: Api, tenant: Tenant, db: asyncpg.Connection
) -> None:
    conversation_id = await live.create_conversation(tenant)
    events = await live.stream(tenant, conversation_id, "hello brave new world")
    assert _types(events) == ["run.started"] + ["message.delta"] * 6 + ["message.completed", "run.completed"]
    envelopes = [e.envelope for e in events]
    assert [e.id for e in events] == [env["id"] for env in envelopes]
    assert [env["seq"] for env in envelopes] == list(range(1, 10))
    assert {env["subject"] for env in envelopes} == {conversation_id}
    assert {env["tenant_id"] for env in envelopes} == {tenant.id}
    assert {env["source"] for env in envelopes} == {"agent"}
    assert "".join(env["data"]["text"] for env in envelopes[1:7]) == "You said: hello brave new world"
    message = envelopes[7]["data"]["message"]
    assert message["content"] == "You said: hello brave new world"
    assert envelopes[8]["data"]["usage"] == {"prompt_tokens": 6, "completion_tokens": 6}
    stored = await live.messages(tenant, conversation_id)
    assert stored[-1] == message
    status = await db.fetchval("SELECT status FROM runs WHERE id = $1", uuid.UUID(message["run_id"]))
    assert status == "completed"


async def test_kafka_and_replay_carry_the_same_envelopes_as_the_stream(
    live: Api, tenant: Tenant, kafka_events: Any, sse: Callable[[str], list[Any]], run_logs: io.StringIO
) -> None:
    conversation_id = await live.create_conversation(tenant)
    streamed = await live.stream(tenant, conversation_id, "one two")
    ids = [e.id for e in streamed]

    records = await kafka_events.records(conversation_id, lambda found: len(found) >= len(ids))
    assert [value for value, _ in records] == [e.data for e in streamed]  # identical bytes, seq included
    traceparents = {headers["traceparent"].split(b"-")[1].decode() for _, headers in records}
    assert len(traceparents) == 1  # every event of the run is in the request's trace

    completed = [orjson.loads(line) for line in run_logs.getvalue().splitlines()]
    completed = [r for r in completed if r["message"] == "run completed"]
    assert completed[-1]["data"]["conversation_id"] == conversation_id
    assert completed[-1]["data"]["tokens"] == {"prompt_tokens": 4, "completion_tokens": 4}  # words
    assert completed[-1]["data"]["duration_ms"] >= 0
    assert completed[-1]["traceId"] in traceparents

    replay = await live.replay(tenant, conversation_id)
    assert replay.status_code == 200
    assert [(e.id, e.data) for e in sse(replay.text)] == [(e.id, e.data) for e in streamed]


async def test_replay_after_a_cursor_returns_only_later_events(
    live: Api, tenant: Tenant, sse: Callable[[str], list[Any]]
) -> None:
    conversation_id = await live.create_conversation(tenant)
    streamed = await live.stream(tenant, conversation_id, "alpha beta gamma")
    cursor = streamed[2].id
    after = await live.replay(tenant, conversation_id, after=cursor)
    assert [e.id for e in sse(after.text)] == [e.id for e in streamed[3:]]
    resumed = await live.replay(tenant, conversation_id, **{"last-event-id": cursor})
    assert [e.id for e in sse(resumed.text)] == [e.id for e in streamed[3:]]


async def test_replay_with_an_unknown_cursor_is_404(live: Api, tenant: Tenant) -> None:
    conversation_id = await live.create_conversation(tenant)
    await live.stream(tenant, conversation_id, "hi")
    response = await live.replay(tenant, conversation_id, after=str(uuid.uuid4()))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_replay_follows_a_run_in_progress_until_it_ends(
    live: Api, tenant: Tenant, sse: Callable[[str], list[Any]]
) -> None:
    conversation_id = await live.create_conversation(tenant)
    follower = asyncio.create_task(live.replay(tenant, conversation_id))
    await asyncio.sleep(0.3)  # the follower waits on an empty log
    streamed = await live.stream(tenant, conversation_id, "[[tokens:5]] [[delay_ms:20]]")
    followed = await asyncio.wait_for(follower, 10)
    assert [e.id for e in sse(followed.text)] == [e.id for e in streamed]


async def test_client_disconnect_does_not_stop_the_run(
    live: Api, tenant: Tenant, sse: Callable[[str], list[Any]]
) -> None:
    conversation_id = await live.create_conversation(tenant)
    headers = {**tenant.headers(), "accept": "text/event-stream"}
    body = {"content": "[[tokens:30]] [[delay_ms:30]]"}
    seen = []
    async with live.http.stream(
        "POST", f"/v1/conversations/{conversation_id}/messages", json=body, headers=headers
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                seen.append(line[7:])
            if seen.count("message.delta") == 2:
                break  # leave mid-stream: the connection closes
    assert seen[0] == "run.started"

    async with asyncio.timeout(15):
        while len(stored := await live.messages(tenant, conversation_id)) < 2:
            await asyncio.sleep(0.1)
    assert stored[-1]["content"] == " ".join(f"tok{i}" for i in range(30))
    replay = sse((await live.replay(tenant, conversation_id)).text)
    assert _types(replay)[-2:] == ["message.completed", "run.completed"]


@pytest.mark.parametrize(
    ("content", "code", "deltas"),
    [
        ("[[tokens:10]] [[fail_after:3]]", "llm_unavailable", 3),  # the connection drops mid-stream
        ("[[tokens:10]] [[stall_after:2]]", "llm_timeout", 2),  # silence past LLM_IDLE_TIMEOUT_S (1 s here)
        ("[[error:503]]", "llm_unavailable", 0),  # the server answers 503
    ],
)
async def test_llm_failure_fails_the_run_and_keeps_no_reply(
    live: Api, tenant: Tenant, db: asyncpg.Connection, kafka_events: Any, content: str, code: str, deltas: int
) -> None:
    conversation_id = await live.create_conversation(tenant)
    events = await live.stream(tenant, conversation_id, content)
    types = _types(events)
    assert types[0] == "run.started"
    assert types[-1] == "run.failed"
    # The stream may lose what was buffered when the connection broke: at most `deltas` got through.
    assert set(types[1:-1]) <= {"message.delta"}
    assert len(types[1:-1]) <= deltas
    error = events[-1].envelope["data"]["error"]
    assert error["code"] == code
    assert error["message"]
    assert [m["role"] for m in await live.messages(tenant, conversation_id)] == ["user"]
    run = await db.fetchrow(
        "SELECT status, error FROM runs WHERE conversation_id = $1", uuid.UUID(conversation_id)
    )
    assert run["status"] == "failed"
    assert orjson.loads(run["error"])["code"] == code
    records = await kafka_events.records(conversation_id, lambda found: len(found) >= len(events))
    assert records[-1][0] == events[-1].data


async def test_tool_call_round_trip_emits_call_and_result_then_answers(live: Api, tenant: Tenant) -> None:
    conversation_id = await live.create_conversation(tenant, tools=["lookup"])
    events = await live.stream(tenant, conversation_id, '[[tool:lookup {"q": "weather"}]]')
    types = _types(events)
    assert types[:3] == ["run.started", "tool.call", "tool.result"]
    assert types[-2:] == ["message.completed", "run.completed"]
    call, result = events[1].envelope["data"], events[2].envelope["data"]
    assert call["name"] == "lookup"
    assert orjson.loads(call["arguments"]) == {"q": "weather"}
    assert result["id"] == call["id"]
    assert result["is_error"] is True
    assert "not available" in result["content"]
    reply = events[-2].envelope["data"]["message"]["content"]
    assert reply == f"Tool lookup returned: {result['content']}"

    stored = await live.messages(tenant, conversation_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["name"] == "lookup"
    assert stored[2]["tool_call_id"] == call["id"]
    assert stored[3]["content"] == reply


async def test_a_run_that_keeps_calling_tools_fails_after_max_tool_steps(live: Api, tenant: Tenant) -> None:
    conversation_id = await live.create_conversation(tenant, tools=["a"])
    events = await live.stream(
        tenant, conversation_id, " ".join(["[[tool:a {}]]"] * 6)
    )  # MAX_TOOL_STEPS is 5
    assert _types(events).count("tool.call") == 5
    assert events[-1].event == "run.failed"
    assert events[-1].envelope["data"]["error"]["code"] == "too_many_tool_steps"
    assert [m["role"] for m in await live.messages(tenant, conversation_id)] == ["user"]


async def test_streamed_message_too_long_is_422_before_anything_is_written(live: Api, tenant: Tenant) -> None:
    conversation_id = await live.create_conversation(tenant)
    response = await live.http.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "x" * 32_001},
        headers={**tenant.headers(), "accept": "text/event-stream"},
    )
    assert response.status_code == 422
    assert await live.messages(tenant, conversation_id) == []


async def test_readiness_checks_every_dependency(live: Api) -> None:
    response = await live.http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok", "kafka": "ok", "llm": "ok"}


async def test_nothing_streams_for_a_missing_conversation(live: Api, tenant: Tenant) -> None:
    response = await live.http.post(
        f"/v1/conversations/{uuid.uuid4()}/messages",
        json={"content": "hi"},
        headers={**tenant.headers(), "accept": "text/event-stream"},
    )
    assert response.status_code == 404
    assert isinstance(response, httpx.Response)


async def test_shutdown_cancels_a_run_and_records_it_failed(
    settings: Settings, serve: Serve, tenant: Tenant, db: asyncpg.Connection
) -> None:
    async with serve(settings) as http:
        agent = (await http.post("/v1/agents", json={"name": "slow"}, headers=tenant.headers())).json()
        created = await http.post(
            "/v1/conversations", json={"agent_id": agent["id"]}, headers=tenant.headers()
        )
        conversation_id = created.json()["id"]
        headers = {**tenant.headers(), "accept": "text/event-stream"}
        body = {"content": "[[tokens:200]] [[delay_ms:50]]"}
        async with http.stream(
            "POST", f"/v1/conversations/{conversation_id}/messages", json=body, headers=headers
        ) as response:
            async for line in response.aiter_lines():
                if line == "event: message.delta":
                    break  # mid-run: now the server shuts down (leaving the block)
    run = await db.fetchrow(
        "SELECT status, error FROM runs WHERE conversation_id = $1", uuid.UUID(conversation_id)
    )
    assert run["status"] == "failed"
    assert orjson.loads(run["error"])["code"] == "cancelled"
    roles = await db.fetch("SELECT role FROM messages WHERE conversation_id = $1", uuid.UUID(conversation_id))
    assert [r["role"] for r in roles] == ["user"]


async def test_idle_replay_sends_heartbeats(settings: Settings, serve: Serve, tenant: Tenant) -> None:
    async with serve(settings.model_copy(update={"sse_heartbeat_s": 0.2})) as http:
        agent = (await http.post("/v1/agents", json={"name": "quiet"}, headers=tenant.headers())).json()
        created = await http.post(
            "/v1/conversations", json={"agent_id": agent["id"]}, headers=tenant.headers()
        )
        path = f"/v1/conversations/{created.json()['id']}/events"
        pings = 0
        async with http.stream("GET", path, headers=tenant.headers()) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                pings += line == ": ping"
                if pings == 2:
                    break
    assert pings == 2
