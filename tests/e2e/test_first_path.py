"""The first real path, driven exactly as a client would: user → gateway → agent → Kafka → ws_gateway."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from typing import Any

import httpx
import orjson
import websockets
from coca_platform.devstack import Stack

PASSWORD = "correct horse battery staple"


async def _signup(api: httpx.AsyncClient) -> str:
    email = f"e2e-{uuid.uuid4().hex[:10]}@example.com"
    created = await api.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "E2E"}
    )
    assert created.status_code == 201, created.text
    login = await api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    body = login.json()
    assert body["token_type"] == "bearer"
    return str(body["access_token"])


async def _conversation(api: httpx.AsyncClient, token: str) -> str:
    auth = {"authorization": f"Bearer {token}"}
    agent = await api.post("/v1/agents", json={"name": "helper", "system_prompt": "Be brief."}, headers=auth)
    assert agent.status_code == 201, agent.text
    conv = await api.post("/v1/conversations", json={"agent_id": agent.json()["id"]}, headers=auth)
    assert conv.status_code == 201, conv.text
    return str(conv.json()["id"])


def _parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")
        if "data" in fields:
            events.append(
                {"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])}
            )
    return events


async def test_chat_streams_same_envelopes_over_sse_and_websocket_with_one_trace(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    token = await _signup(api)
    conv_id = await _conversation(api, token)
    auth = {"authorization": f"Bearer {token}"}
    ws_url = f"ws://127.0.0.1:{stack.ports['gateway']}/ws?token={token}"
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"

    async with websockets.connect(ws_url) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "authenticated"
        await ws.send(json.dumps({"type": "subscribe", "conversation_id": conv_id}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack == {"type": "subscribed", "conversation_id": conv_id}

        async def ws_events() -> list[dict[str, Any]]:
            received = []
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") in ("ping", "pong"):
                    continue
                received.append(frame)
                if frame["type"] in ("run.completed", "run.failed"):
                    return received

        ws_task = asyncio.create_task(asyncio.wait_for(ws_events(), 30))
        resp = await api.post(
            f"/v1/conversations/{conv_id}/messages",
            json={"content": "hello from the end-to-end test"},
            headers={**auth, "accept": "text/event-stream", "traceparent": traceparent},
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/event-stream")
        sse = _parse_sse(resp.text)
        over_ws = await ws_task

    types = [e["event"] for e in sse]
    assert types[0] == "run.started"
    assert "message.delta" in types
    assert types[-2:] == ["message.completed", "run.completed"]
    assert all(e["id"] == e["data"]["id"] and e["event"] == e["data"]["type"] for e in sse)
    assert [e["id"] for e in sse] == [e["id"] for e in over_ws]
    assert [e["data"] for e in sse] == over_ws
    reply = "".join(e["data"]["data"]["text"] for e in sse if e["event"] == "message.delta")
    assert "hello from the end-to-end test" in reply

    messages = await api.get(f"/v1/conversations/{conv_id}/messages", headers=auth)
    assert messages.status_code == 200
    items = messages.json()["items"]
    assert [m["role"] for m in items] == ["user", "assistant"]
    assert items[1]["content"] == reply

    replay = await api.get(
        f"/v1/conversations/{conv_id}/events", params={"after": sse[2]["id"]}, headers=auth
    )
    assert [e["id"] for e in _parse_sse(replay.text)] == [e["id"] for e in sse[3:]]

    for service in ("gateway", "agent", "ws_gateway"):
        lines = [
            orjson.loads(line)
            for line in stack.log_path(service).read_text().splitlines()
            if line.startswith("{")
        ]
        assert any(entry["traceId"] == trace_id for entry in lines), f"trace {trace_id} not in {service} logs"


async def test_dropped_client_resumes_with_last_event_id(api: httpx.AsyncClient) -> None:
    token = await _signup(api)
    conv_id = await _conversation(api, token)
    auth = {"authorization": f"Bearer {token}"}
    seen: list[str] = []
    async with api.stream(
        "POST",
        f"/v1/conversations/{conv_id}/messages",
        json={"content": "[[tokens:40]] [[delay_ms:20]] go"},
        headers={**auth, "accept": "text/event-stream"},
    ) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("id:"):
                seen.append(line[3:].strip())
            if len(seen) == 5:
                break  # the client drops mid-stream
    resumed = await api.get(
        f"/v1/conversations/{conv_id}/events", headers={**auth, "last-event-id": seen[-1]}, timeout=30
    )
    events = _parse_sse(resumed.text)
    assert events[-1]["event"] == "run.completed"
    assert not set(seen) & {e["id"] for e in events}
    seqs = [e["data"]["seq"] for e in events]
    assert seqs == list(range(6, 6 + len(events)))
    deltas = [e for e in events if e["event"] == "message.delta"]
    assert len(deltas) == 40 - 4  # five events seen: run.started and four deltas


async def test_llm_failure_mid_stream_reports_run_failed_and_persists_no_reply(
    api: httpx.AsyncClient,
) -> None:
    token = await _signup(api)
    conv_id = await _conversation(api, token)
    auth = {"authorization": f"Bearer {token}"}
    resp = await api.post(
        f"/v1/conversations/{conv_id}/messages",
        json={"content": "[[fail_after:3]] hi"},
        headers={**auth, "accept": "text/event-stream"},
    )
    events = _parse_sse(resp.text)
    assert events[-1]["event"] == "run.failed"
    assert events[-1]["data"]["data"]["error"]["code"] == "llm_unavailable"
    items = (await api.get(f"/v1/conversations/{conv_id}/messages", headers=auth)).json()["items"]
    assert [m["role"] for m in items] == ["user"]


async def test_another_tenants_conversation_is_not_found(api: httpx.AsyncClient) -> None:
    owner = await _signup(api)
    conv_id = await _conversation(api, owner)
    stranger = {"authorization": f"Bearer {await _signup(api)}"}
    for resp in (
        await api.get(f"/v1/conversations/{conv_id}", headers=stranger),
        await api.get(f"/v1/conversations/{conv_id}/messages", headers=stranger),
        await api.post(f"/v1/conversations/{conv_id}/messages", json={"content": "hi"}, headers=stranger),
    ):
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"


async def test_bad_credentials_and_forged_tokens_are_refused(api: httpx.AsyncClient) -> None:
    token = await _signup(api)
    wrong = await api.post(
        "/v1/auth/login", json={"email": "nobody@example.com", "password": "wrong password"}
    )
    assert wrong.status_code == 401
    header, payload, _sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    admin = base64.urlsafe_b64encode(json.dumps({**claims, "role": "owner"}).encode()).rstrip(b"=").decode()
    for bad in (f"{none_header}.{payload}.", f"{header}.{admin}.{_sig}", "garbage", "a.b.c"):
        resp = await api.get("/v1/users/me", headers={"authorization": f"Bearer {bad}"})
        assert resp.status_code == 401, bad
        assert resp.json()["error"]["code"]
    assert (await api.get("/v1/users/me", headers={"authorization": f"Bearer {token}"})).status_code == 200


async def test_bad_input_gets_clear_errors_not_500(api: httpx.AsyncClient) -> None:
    auth = {"authorization": f"Bearer {await _signup(api)}"}
    malformed = await api.post(
        "/v1/agents", content=b"{nope", headers={**auth, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    unknown = await api.get("/v1/no-such-thing", headers=auth)
    assert unknown.status_code == 404
    huge = await api.post(
        "/v1/agents", content=b"x" * (22 * 1024 * 1024), headers={**auth, "content-type": "application/json"}
    )
    assert huge.status_code == 413
    for resp in (malformed, unknown, huge):
        assert set(resp.json()["error"]) >= {"code", "message", "trace_id"}
