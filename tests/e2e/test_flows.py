"""Every flow of the architecture through the gateway, on the running processes: knowledge, metering
and quotas, webhook channels, tools."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from aiohttp import web
from coca_platform.devstack import Stack
from coca_platform.envelope import new_envelope
from coca_platform.identity import Identity
from coca_platform.kafka import open_producer
from coca_platform.testing import serve_aiohttp, signed_headers

from tests.e2e.test_first_path import _parse_sse, _signup

DEV_INTERNAL_SECRET = "coca-dev-internal-secret-change-me"


async def _wait_for(check: Any, timeout_s: float = 60.0, every_s: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every_s)


async def _agent(api: httpx.AsyncClient, auth: dict[str, str], **fields: Any) -> str:
    resp = await api.post(
        "/v1/agents", json={"name": "flows", "system_prompt": "Be brief.", **fields}, headers=auth
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def _chat(
    api: httpx.AsyncClient, auth: dict[str, str], agent_id: str, text: str
) -> list[dict[str, Any]]:
    conv = await api.post("/v1/conversations", json={"agent_id": agent_id}, headers=auth)
    assert conv.status_code == 201, conv.text
    resp = await api.post(
        f"/v1/conversations/{conv.json()['id']}/messages",
        json={"content": text},
        headers={**auth, "accept": "text/event-stream"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return _parse_sse(resp.text)


@pytest.fixture
async def auth(api: httpx.AsyncClient) -> dict[str, str]:
    return {"authorization": f"Bearer {await _signup(api)}"}


async def test_uploaded_document_is_indexed_and_the_answer_cites_it(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    kb = await api.post("/v1/knowledge-bases", json={"name": "handbook"}, headers=auth)
    assert kb.status_code == 201, kb.text
    kb_id = kb.json()["id"]
    text = b"Office hours.\n\nThe Coca office opens at nine o'clock every weekday and closes at six."
    upload = await api.post(
        f"/v1/knowledge-bases/{kb_id}/documents",
        files={"file": ("office.txt", text, "text/plain")},
        headers=auth,
    )
    assert upload.status_code == 202, upload.text
    assert upload.json()["status"] == "queued"
    doc_url = f"/v1/knowledge-bases/{kb_id}/documents/{upload.json()['id']}"

    async def ready() -> dict[str, Any] | None:
        doc = (await api.get(doc_url, headers=auth)).json()
        assert doc["status"] != "failed", doc
        return doc if doc["status"] == "ready" else None

    await _wait_for(ready, timeout_s=90)
    found = await api.post(
        f"/v1/knowledge-bases/{kb_id}/search",
        json={"query": "when does the office open", "top_k": 3},
        headers=auth,
    )
    assert "nine o'clock" in found.json()["items"][0]["text"]

    events = await _chat(
        api, auth, await _agent(api, auth, knowledge_base_ids=[kb_id]), "when does the office open"
    )
    completed = next(e for e in events if e["event"] == "message.completed")["data"]["data"]
    assert "(source: [1] office.txt)" in completed["message"]["content"]
    assert completed["sources"][0]["document_name"] == "office.txt"


async def test_usage_is_counted_once_even_when_its_record_is_delivered_twice(
    stack: Stack, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    agent_id = await _agent(api, auth)
    events = await _chat(api, auth, agent_id, "meter this reply")
    run = events[-1]["data"]
    assert run["type"] == "run.completed"
    tokens = run["data"]["usage"]["prompt_tokens"] + run["data"]["usage"]["completion_tokens"]

    async def totals() -> dict[str, int] | None:
        body = (await api.get("/v1/usage", params={"group_by": "model"}, headers=auth)).json()
        return (
            body["totals"] if body["totals"]["prompt_tokens"] + body["totals"]["completion_tokens"] else None
        )

    first = await _wait_for(totals)
    assert first["prompt_tokens"] + first["completion_tokens"] == tokens
    me = (await api.get("/v1/users/me", headers=auth)).json()
    # The same record again (as a redelivery would bring it), then a marker record after it on the
    # same partition (same key): once the marker is counted, the duplicate has been handled too.
    duplicate = orjson.loads(await _usage_record(stack, run["data"]["run_id"]))
    marker = new_envelope(
        "usage.recorded",
        source="e2e",
        tenant_id=me["tenant_id"],
        subject=str(uuid.uuid4()),
        data={**duplicate["data"], "run_id": str(uuid.uuid4()), "prompt_tokens": 1, "completion_tokens": 0},
    )
    async with open_producer(stack.infra.kafka_bootstrap, client_id="e2e") as producer:
        await producer.produce("usage.records", orjson.dumps(duplicate), key=me["tenant_id"])
        await producer.produce("usage.records", marker.to_json(), key=me["tenant_id"])

    async def marker_counted() -> dict[str, int] | None:
        now = await totals()
        return now if now and now["prompt_tokens"] == first["prompt_tokens"] + 1 else None

    after = await _wait_for(marker_counted)
    assert after["completion_tokens"] == first["completion_tokens"]


async def _usage_record(stack: Stack, run_id: str) -> bytes:
    """The usage record the agent published for ``run_id``, read back from Kafka."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": stack.infra.kafka_bootstrap,
            "group.id": f"e2e-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe(["usage.records"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for msg in await asyncio.to_thread(consumer.consume, 100, 0.5):
                if msg.error() is None and orjson.loads(msg.value())["data"].get("run_id") == run_id:
                    return bytes(msg.value())
        raise AssertionError(f"no usage record for run {run_id}")
    finally:
        consumer.close()


async def test_tenant_over_quota_is_refused_before_the_llm(
    stack: Stack, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    import asyncpg

    conn = await asyncpg.connect(stack.infra.database_url)
    try:
        await conn.execute(
            "INSERT INTO coca_billing.plans (id, name, monthly_token_quota, price_micros)"
            " VALUES ('tiny', 'Tiny', 100, 0) ON CONFLICT (id) DO NOTHING"
        )
    finally:
        await conn.close()
    tenant_id = (await api.get("/v1/users/me", headers=auth)).json()["tenant_id"]
    system = signed_headers(
        Identity(tenant_id="-", user_id="service:e2e", role="system"), DEV_INTERNAL_SECRET
    )
    async with httpx.AsyncClient(base_url=stack.url("billing")) as billing:
        assigned = await billing.put(
            f"/internal/v1/tenants/{tenant_id}/plan", json={"plan_id": "tiny"}, headers=system
        )
        assert assigned.status_code == 200, assigned.text
    agent_id = await _agent(api, auth)
    conv = (await api.post("/v1/conversations", json={"agent_id": agent_id}, headers=auth)).json()
    refused = await api.post(
        f"/v1/conversations/{conv['id']}/messages",
        json={"content": "hello"},
        headers={**auth, "accept": "text/event-stream"},
    )
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert (await api.get(f"/v1/conversations/{conv['id']}/messages", headers=auth)).json()["items"] == []


class Receiver:
    """A webhook receiver on this machine, reached as ``localhost`` (the stack allow-lists that name)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/tool", self._tool)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    async def _tool(self, request: web.Request) -> web.Response:
        args = await request.json()
        return web.json_response({"forecast": f"sunny in {args['city']}"})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    async with serve_aiohttp(found.app()) as url:
        found.url = url.replace("127.0.0.1", "localhost")
        yield found


def _sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"x-coca-timestamp": str(ts), "x-coca-signature": f"v1={mac}", "content-type": "application/json"}


async def test_signed_webhook_message_gets_a_signed_reply_and_unsigned_is_rejected(
    api: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    agent_id = await _agent(api, auth)
    created = await api.post(
        "/v1/channels",
        json={"type": "webhook", "agent_id": agent_id, "config": {"outbound_url": f"{receiver.url}/hook"}},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    channel, secret = created.json(), created.json()["signing_secret"]
    body = json.dumps({"id": "msg-1", "text": "ping from a webhook", "thread_id": "t-1"}).encode()
    inbound = f"/v1/channels/{channel['id']}/inbound"
    unsigned = await api.post(inbound, content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 401
    forged = await api.post(inbound, content=body, headers=_sign("whsec_not-the-secret", body))
    assert forged.status_code == 401
    accepted = await api.post(inbound, content=body, headers=_sign(secret, body))
    assert accepted.status_code == 202, accepted.text

    headers, reply = await _wait_for(lambda: _first(receiver.requests), timeout_s=60)
    lowered = {k.lower(): v for k, v in headers.items()}
    expected = _sign(secret, reply, int(lowered["x-coca-timestamp"]))["x-coca-signature"]
    assert hmac.compare_digest(lowered["x-coca-signature"], expected)
    assert "ping from a webhook" in json.loads(reply)["text"]


async def _first(items: list[Any]) -> Any:
    return items[0] if items else None


async def test_reply_to_an_unreachable_outbound_url_is_dead_lettered(
    stack: Stack, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    from coca_platform.localinfra import free_port

    agent_id = await _agent(api, auth)
    created = await api.post(
        "/v1/channels",
        json={
            "type": "webhook",
            "agent_id": agent_id,
            "config": {"outbound_url": f"http://localhost:{free_port()}/gone"},
        },
        headers=auth,
    )
    channel, secret = created.json(), created.json()["signing_secret"]
    body = json.dumps({"id": "msg-dead", "text": "nobody will hear this"}).encode()
    assert (
        await api.post(f"/v1/channels/{channel['id']}/inbound", content=body, headers=_sign(secret, body))
    ).status_code == 202

    connection = await aio_pika.connect(stack.infra.amqp_url)
    try:
        chan = await connection.channel()
        queue = await chan.get_queue("channel.outbound.dlq", ensure=False)

        async def dead_lettered() -> dict[str, Any] | None:
            while (message := await queue.get(fail=False, no_ack=False)) is not None:
                envelope = orjson.loads(message.body)
                if envelope["data"].get("channel_id") == channel["id"]:
                    await message.ack()
                    return {"envelope": envelope, "headers": dict(message.headers or {})}
                await message.nack(requeue=True)
                return None
            return None

        found = await _wait_for(dead_lettered, timeout_s=60, every_s=0.5)
    finally:
        await connection.close()
    assert found["headers"].get("x-coca-attempt") == 3
    assert found["headers"].get("x-coca-dead-letter-reason") == "max_attempts"


async def test_tool_call_round_trips_through_the_plugin_service(
    api: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    tool = {
        "name": "forecast",
        "description": "Weather forecast for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "endpoint_url": f"{receiver.url}/tool",
    }
    plugin = await api.post("/v1/plugins", json={"name": "weather", "tools": [tool]}, headers=auth)
    assert plugin.status_code == 201, plugin.text
    tool_id = plugin.json()["tools"][0]["id"]
    agent_id = await _agent(api, auth, tools=[tool_id])
    events = await _chat(api, auth, agent_id, f'[[tool:{tool_id} {{"city": "Lisbon"}}]] weather please')
    types = [e["event"] for e in events]
    assert types.index("tool.call") < types.index("tool.result") < types.index("message.completed")
    result = next(e for e in events if e["event"] == "tool.result")["data"]["data"]
    assert result["is_error"] is False
    assert "sunny in Lisbon" in result["content"]
    final = next(e for e in events if e["event"] == "message.completed")["data"]["data"]["message"]["content"]
    assert final.startswith(f"Tool {tool_id} returned:")


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254"])
async def test_tool_pointing_at_a_private_address_is_refused(
    api: httpx.AsyncClient, auth: dict[str, str], host: str
) -> None:
    tool = {
        "name": "probe",
        "description": "x",
        "parameters": {"type": "object", "properties": {}},
        "endpoint_url": f"http://{host}:8080/latest/meta-data",
    }
    resp = await api.post(
        "/v1/plugins", json={"name": f"p{uuid.uuid4().hex[:8]}", "tools": [tool]}, headers=auth
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "egress_refused"
