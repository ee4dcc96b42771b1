"""Streaming through the gateway: SSE relayed event by event, WebSocket relay, and CORS preflight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest

pytestmark = pytest.mark.integration


async def test_sse_events_arrive_one_by_one_before_the_peer_finishes(
    client: httpx.AsyncClient, mint: Callable[..., str], agent_peer: Any
) -> None:
    arrivals: list[tuple[float, str]] = []
    headers = {"Authorization": f"Bearer {mint()}", "Accept": "text/event-stream"}

    async with client.stream("GET", "/v1/conversations/c-1/events", headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                arrivals.append((time.monotonic(), line))
                if len(arrivals) == 1:
                    first_seen_while_peer_still_streaming = agent_peer.stream_finished_at is None

    assert [line for _, line in arrivals] == [f"id: {n}" for n in range(5)]
    assert first_seen_while_peer_still_streaming
    assert agent_peer.stream_finished_at is not None
    assert arrivals[0][0] < agent_peer.stream_finished_at - 0.6  # ~1.5 s of later events were still to come


async def test_client_leaving_an_sse_stream_stops_the_peers_stream(
    client: httpx.AsyncClient, mint: Callable[..., str], agent_peer: Any
) -> None:
    headers = {"Authorization": f"Bearer {mint()}"}
    async with client.stream("GET", "/v1/conversations/c-2/events?n=100", headers=headers) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                break  # leave after the first event

    await asyncio.wait_for(agent_peer.stream_cancelled.wait(), 5)

    assert agent_peer.stream_finished_at is None


async def test_cors_preflight_is_answered_without_credentials_and_not_proxied(
    client: httpx.AsyncClient, agent_peer: Any
) -> None:
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }

    allowed = await client.options("/v1/agents", headers=preflight)
    foreign = await client.options("/v1/agents", headers=preflight | {"Origin": "https://evil.example"})
    error = await client.get("/v1/agents", headers={"Origin": "http://localhost:3000"})

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in foreign.headers
    assert error.status_code == 401  # and the browser may read why:
    assert error.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-request-id" in error.headers["access-control-expose-headers"].lower()
    assert agent_peer.seen == []


async def test_websocket_relays_frames_both_ways_and_the_peers_close(gateway: str, agent_peer: Any) -> None:
    url = gateway.replace("http://", "ws://") + "/ws?token=abc"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=("coca.v1",), headers={"X-Coca-Identity": "forged"}) as ws,
    ):
        await ws.send_str("hello")
        text = await ws.receive(timeout=5)
        await ws.send_bytes(b"\x01\x02\x03")
        binary = await ws.receive(timeout=5)
        await ws.send_str("close-me")
        closing = await ws.receive(timeout=5)
        protocol = ws.protocol

    assert (text.type, text.data) == (aiohttp.WSMsgType.TEXT, "echo:hello")
    assert (binary.type, binary.data) == (aiohttp.WSMsgType.BINARY, b"\x03\x02\x01")
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert (closing.data, closing.extra) == (4001, "bye")
    assert protocol == "coca.v1"
    opened = agent_peer.seen[0]
    assert opened.path_qs == "/ws?token=abc"
    assert "X-Coca-Identity" not in opened.headers
    assert "X-Request-ID" in opened.headers


async def test_websocket_client_close_reaches_the_peer(gateway: str, agent_peer: Any) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gateway.replace("http://", "ws://") + "/ws")
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "echo:ping"
        await ws.close(code=4003, message=b"done")

    for _ in range(100):
        if any(s.method == "WS-CLOSED" for s in agent_peer.seen):
            break
        await asyncio.sleep(0.05)
    assert [s.path_qs for s in agent_peer.seen if s.method == "WS-CLOSED"] == ["4003"]


async def test_websocket_is_refused_when_ws_gateway_is_down(start_gateway: Any) -> None:
    from coca_platform.testing import free_port

    async with (
        start_gateway(ws_gateway_service_addr=f"127.0.0.1:{free_port()}") as base,
        aiohttp.ClientSession() as session,
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(base.replace("http://", "ws://") + "/ws")

    assert refused.value.status == 403
