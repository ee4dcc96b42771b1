"""The chat path shared by the SSE and agent-turn scenarios: stand-in, agent, gateway, and the clients.

Coca: ``POST /v1/conversations/{id}/messages`` (``Accept: text/event-stream``) through the gateway to
the agent, which streams from the LLM stand-in, appends every event to the conversation's Redis log,
produces it to Kafka and persists the reply in PostgreSQL. Direct: the same completion asked of the
stand-in itself (or through an nginx in front of it).
"""

from __future__ import annotations

import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from coca_platform.testing import FakeUserService, TokenIssuer

from bench.loadgen import StreamTiming, read_sse
from bench.procs import BenchError, Proc, free_port, python_module, wait_http
from bench.stack import Bench

DIRECT_TOKEN = b'{"content":"'  # a content delta (the first chunk's delta starts with "role")
DIRECT_END = b"[DONE]"
COCA_TOKEN = b"event: message.delta"
COCA_END = b"event: run.completed"
COCA_FAILED = b"event: run.failed"


@dataclass
class ChatStack:
    standin: str  # the stand-in's root URL
    gateway: str
    procs: list[Proc]  # the processes under test: gateway, agent (and billing)
    authorization: str
    conversations: list[str]


def directives(tokens: int, delay_ms: float) -> str:
    return f"[[tokens:{tokens}]] [[delay_ms:{int(delay_ms)}]]"


async def start(bench: Bench, stack: AsyncExitStack, *, conversations: int, billing: bool) -> ChatStack:
    """Stand-in (load core), agent and gateway (SUT core), and with ``billing`` the billing service too
    (SUT core: the agent reserves quota there before every run); otherwise quotas are off."""
    port = free_port()
    standin = bench.start("llm-standin", python_module("coca_llm_standin", "--port", str(port)), sut=False)
    standin_url = f"http://127.0.0.1:{port}"
    await wait_http(standin, standin_url + "/health")
    issuer = TokenIssuer()
    users = await stack.enter_async_context(FakeUserService(issuer).serve())
    env = await bench.service_env(
        DATABASE_URL=await bench.database(),
        KAFKA_BOOTSTRAP=await bench.kafka(),
        LLM_BASE_URL=standin_url + "/v1",
        MAX_CONCURRENT_RUNS=str(max(64, conversations * 2)),
        DB_POOL_MAX=str(max(10, min(50, conversations))),
        PLUGIN_SERVICE_ADDR="",  # the benchmark's agent has no tools
        BILLING_SERVICE_ADDR="",
        FREE_PLAN_MONTHLY_TOKENS=str(10**15),  # quota never runs out during a run
    )
    sut: list[Proc] = []
    if billing:
        billing_proc, env["BILLING_SERVICE_ADDR"] = await bench.coca("billing", env, migrate=True)
        sut.append(billing_proc)
    agent, agent_url = await bench.coca("agent", env, migrate=True)
    gateway, gateway_url = await bench.coca(
        "gateway", {**env, "USER_SERVICE_ADDR": users.url, "AGENT_SERVICE_ADDR": agent_url}
    )
    authorization = f"Bearer {issuer.mint(str(uuid.uuid4()), str(uuid.uuid4()), role='owner', ttl_s=7200)}"
    headers = {"authorization": authorization}
    async with aiohttp.ClientSession(base_url=gateway_url, headers=headers) as session:
        created = await _post(session, "/v1/agents", {"name": "bench", "system_prompt": "Be brief."})
        ids = [
            (await _post(session, "/v1/conversations", {"agent_id": created["id"]}))["id"]
            for _ in range(conversations)
        ]
    return ChatStack(standin_url, gateway_url, [gateway, agent, *sut], authorization, ids)


async def _post(session: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(path, json=body) as resp:
        text = await resp.read()
        if resp.status != 201:
            raise BenchError(f"POST {path} answered {resp.status}: {text[:500]!r}")
        found: dict[str, Any] = orjson.loads(text)
        return found


async def stream_direct(
    session: aiohttp.ClientSession, base_url: str, tokens: int, delay_ms: float, timeout_s: float = 60
) -> StreamTiming:
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": directives(tokens, delay_ms)}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = _clock()
    async with session.post(
        base_url + "/v1/chat/completions",
        data=orjson.dumps(body),
        headers={"content-type": "application/json", "accept": "text/event-stream"},
    ) as resp:
        if resp.status != 200:
            raise BenchError(f"stand-in answered {resp.status}")
        timing = await read_sse(resp, DIRECT_TOKEN, (DIRECT_END,), started, timeout_s)
    if timing.ended_with is None:
        raise BenchError("the stream ended before [DONE]")
    return timing


async def stream_coca(
    session: aiohttp.ClientSession,
    chat: ChatStack,
    conversation: str,
    tokens: int,
    delay_ms: float,
    timeout_s: float = 60,
) -> StreamTiming:
    started = _clock()
    async with session.post(
        f"{chat.gateway}/v1/conversations/{conversation}/messages",
        data=orjson.dumps({"content": directives(tokens, delay_ms)}),
        headers={
            "authorization": chat.authorization,
            "content-type": "application/json",
            "accept": "text/event-stream",
        },
    ) as resp:
        if resp.status != 200:
            raise BenchError(f"gateway answered {resp.status}: {(await resp.read())[:300]!r}")
        timing = await read_sse(resp, COCA_TOKEN, (COCA_END, COCA_FAILED), started, timeout_s)
    if timing.ended_with != COCA_END:
        raise BenchError("the run failed (run.failed)" if timing.ended_with else "the stream ended early")
    return timing


_clock = time.perf_counter
