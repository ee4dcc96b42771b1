"""Fixtures for the gateway's tests: the gateway as a real uvicorn server on a free port, over real
Redis, in front of stand-ins for its peers at their HTTP boundary (a user service serving a JWKS and the
API-key verify endpoint; an echo peer that records what reached it, streams SSE slowly and echoes
WebSocket frames)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import WSMsgType, web
from coca_gateway.app import create_app
from coca_gateway.settings import Settings
from coca_platform.identity import IDENTITY_HEADER, SIGNATURE_HEADER, Identity, verify
from coca_platform.testing import FakeUserService, TokenIssuer, free_port, serve_asgi

SECRET = "gateway-test-secret"


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    identity: Identity | None


class Peer(FakeUserService):
    """One stand-in peer, the user service's JWKS and API-key verify endpoint included; ``seen`` records
    every other request that reached it."""

    def __init__(self, name: str, issuer: TokenIssuer) -> None:
        super().__init__(issuer, internal_secret=SECRET)
        self.name = name
        self.seen: list[Seen] = []
        self.stream_finished_at: float | None = None
        self.stream_cancelled = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(app)
        app.router.add_get("/v1/conversations/{id}/events", self._sse)
        app.router.add_get("/v1/agents/slow", self._slow)
        app.router.add_get("/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        return app

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        identity = None
        if IDENTITY_HEADER in request.headers:
            identity = verify(
                request.headers[IDENTITY_HEADER], request.headers.get(SIGNATURE_HEADER), SECRET.encode()
            )
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body, identity))
        return web.json_response(
            {"peer": self.name, "path": request.path_qs, "body_len": len(body)},
            headers={"X-Peer": self.name, "Keep-Alive": "timeout=5", "Access-Control-Allow-Origin": "*"},
        )

    async def _slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({})

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        """Five events, 0.3 s apart: a relay that buffers shows them all at once at the end."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for n in range(int(request.query.get("n", "5"))):
                await response.write(f'id: {n}\nevent: message.delta\ndata: {{"n": {n}}}\n\n'.encode())
                await asyncio.sleep(0.3)
        except ConnectionResetError:  # the gateway let go: the client left
            self.stream_cancelled.set()
            return response
        except asyncio.CancelledError:
            self.stream_cancelled.set()
            raise
        self.stream_finished_at = time.monotonic()
        await response.write_eof()
        return response

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        self.seen.append(Seen("WS", request.path_qs, dict(request.headers), b"", None))
        ws = web.WebSocketResponse(protocols=("coca.v1",))
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT and message.data == "close-me":
                await ws.close(code=4001, message=b"bye")
            elif message.type == WSMsgType.TEXT:
                await ws.send_str(f"echo:{message.data}")
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        self.seen.append(Seen("WS-CLOSED", str(ws.close_code), {}, b"", None))
        return ws


@pytest.fixture
def internal_secret() -> str:
    return SECRET


@pytest.fixture(scope="session")
def issuer() -> TokenIssuer:
    """The user service's signing key: its JWKS is what the peers serve."""
    return TokenIssuer()


@pytest.fixture
def mint(issuer: TokenIssuer) -> Callable[..., str]:
    """An access token as the user service issues them (claims overridable)."""
    return issuer.mint


@pytest.fixture
async def user_peer(issuer: TokenIssuer) -> AsyncIterator[Peer]:
    async with Peer("user", issuer).serve() as peer:
        yield peer


@pytest.fixture
async def agent_peer(issuer: TokenIssuer) -> AsyncIterator[Peer]:
    async with Peer("agent", issuer).serve() as peer:
        yield peer


GatewayFactory = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def start_gateway(infra: Any, user_peer: Peer, agent_peer: Peer) -> GatewayFactory:
    """``async with start_gateway(**settings) as base_url``: a gateway served by uvicorn on a free port.
    Client IPs come from ``X-Forwarded-For`` (one trusted hop), so each test can be its own client."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[str]:
        dead = f"http://127.0.0.1:{free_port()}"
        values: dict[str, Any] = {
            "environment": "test",
            "internal_secret": SECRET,
            "redis_url": infra.redis_url,
            "user_service_addr": user_peer.url,
            "agent_service_addr": agent_peer.url,
            "ws_gateway_service_addr": agent_peer.url,
            "channel_service_addr": dead,
            "memory_service_addr": dead,
            "billing_service_addr": dead,
            "plugin_service_addr": dead,
            "trusted_proxy_hops": 1,
            "rate_limit_ip_per_min": 100_000,
            "rate_limit_user_per_min": 100_000,
            "rate_limit_key_per_min": 100_000,
            "rate_limit_auth_ip_per_min": 100_000,
        }
        settings = Settings(**(values | overrides))
        async with serve_asgi(
            create_app(settings),
            http="httptools",
            ws="websockets-sansio",
            timeout_graceful_shutdown=2,
            proxy_headers=False,
        ) as base_url:
            yield base_url

    return start


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> AsyncIterator[str]:
    async with start_gateway() as base_url:
        yield base_url


@pytest.fixture
async def client(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the default gateway, from an IP of its own (for the per-IP limits)."""
    ip = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    async with httpx.AsyncClient(base_url=gateway, headers={"X-Forwarded-For": ip}, timeout=10) as http:
        yield http
