"""Fixtures for ws_gateway's tests: real Redis and Kafka (from ``infra``), a stand-in user service that
serves the JWKS of a ``TokenIssuer`` (tokens are minted with it), and ws_gateway itself under uvicorn on a
free port, reading its own events topic. ``Publisher`` writes events the way the agent does: event
log first (which assigns ``seq``), then Kafka keyed by conversation id.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from coca_platform import kafka
from coca_platform.cache import open_redis
from coca_platform.envelope import new_envelope
from coca_platform.eventlog import EventLog
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import FakeUserService, TokenIssuer, create_topic, serve_asgi
from coca_ws_gateway.app import create_app
from coca_ws_gateway.settings import Settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

SEND_QUEUE_MAX = 64
HEARTBEAT_S = 0.5


@pytest.fixture(scope="session")
def issuer() -> TokenIssuer:
    """The user service's signing key: ``user_service`` serves its JWKS, so tokens it mints pass."""
    return TokenIssuer()


@pytest.fixture(scope="session")
async def user_service(issuer: TokenIssuer) -> AsyncIterator[FakeUserService]:
    """A stand-in for the user service's ``/.well-known/jwks.json``."""
    async with FakeUserService(issuer).serve() as fake:
        yield fake


@dataclass(frozen=True)
class Gateway:
    settings: Settings
    port: int
    url: str
    http_url: str


@pytest.fixture(scope="session")
async def gateway(infra: LocalInfra, user_service: FakeUserService) -> AsyncIterator[Gateway]:
    topic = f"agent.events.t-{uuid.uuid4().hex[:12]}"
    await create_topic(infra.kafka_bootstrap, topic, partitions=4)
    settings = Settings(
        environment="test",
        redis_url=infra.redis_url,
        kafka_bootstrap=infra.kafka_bootstrap,
        user_service_addr=user_service.url,
        events_topic=topic,
        ws_send_queue_max=SEND_QUEUE_MAX,
        ws_heartbeat_s=HEARTBEAT_S,
        ws_auth_timeout_s=1.0,
        ws_max_message_bytes=4096,
        ws_max_subscriptions=5,
    )
    async with serve_asgi(
        create_app(settings), ws="websockets-sansio", timeout_graceful_shutdown=5
    ) as http_url:
        port = int(http_url.rsplit(":", 1)[1])
        yield Gateway(settings, port, f"ws://127.0.0.1:{port}/ws", http_url)


@dataclass
class Publisher:
    eventlog: EventLog
    producer: kafka.KafkaProducer
    topic: str

    async def conversation(self, tenant_id: str) -> str:
        conversation_id = str(uuid.uuid4())
        await self.eventlog.set_owner(conversation_id, tenant_id)
        return conversation_id

    async def publish(
        self,
        tenant_id: str,
        conversation_id: str,
        type_: str = "message.delta",
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Like the agent: event log (assigns seq), then Kafka; returns the envelope bytes."""
        envelope = new_envelope(
            type_, source="agent", tenant_id=tenant_id, subject=conversation_id, data=data or {}
        )
        _, raw = await self.eventlog.append(envelope)
        await self.producer.produce(self.topic, raw, key=conversation_id, headers=headers)
        return raw

    async def append_only(self, tenant_id: str, conversation_id: str) -> bytes:
        """Event log only: as if its Kafka message were still on its way (or lost)."""
        envelope = new_envelope("message.delta", source="agent", tenant_id=tenant_id, subject=conversation_id)
        return (await self.eventlog.append(envelope))[1]

    async def produce_many(self, tenant_id: str, conversation_id: str, datas: list[dict[str, Any]]) -> None:
        """Kafka only (seq 1..n, nothing in the event log): many events without awaiting each ack."""
        pending = []
        for seq, data in enumerate(datas, start=1):
            envelope = new_envelope(
                "message.delta",
                source="agent",
                tenant_id=tenant_id,
                subject=conversation_id,
                data=data,
                seq=seq,
            )
            pending.append(self.producer.produce_nowait(self.topic, envelope.to_json(), key=conversation_id))
        await asyncio.gather(*pending)

    async def produce_only(self, key: str, raw: bytes) -> None:
        await self.producer.produce(self.topic, raw, key=key)


@pytest.fixture(scope="session")
async def publisher(infra: LocalInfra, gateway: Gateway) -> AsyncIterator[Publisher]:
    async with (
        open_redis(infra.redis_url) as redis,
        kafka.open_producer(infra.kafka_bootstrap, client_id="ws-test") as producer,
    ):
        yield Publisher(EventLog(redis), producer, gateway.settings.events_topic)


class WsHelpers:
    """Client-side helpers, handed to tests by the ``kit`` fixture."""

    @staticmethod
    async def recv(ws: ClientConnection, timeout_s: float = 10) -> dict[str, Any]:
        """The next frame that is not a heartbeat, parsed."""
        while True:
            raw = await asyncio.wait_for(ws.recv(), timeout_s)
            msg = orjson.loads(raw)
            if msg.get("type") != "ping":
                return msg  # type: ignore[no-any-return]

    @staticmethod
    async def recv_raw(ws: ClientConnection, timeout_s: float = 10) -> bytes:
        """The next non-heartbeat frame's exact bytes."""
        while True:
            raw = await asyncio.wait_for(ws.recv(decode=False), timeout_s)
            assert isinstance(raw, bytes)
            if orjson.loads(raw).get("type") != "ping":
                return raw

    @staticmethod
    async def open_client(gateway: Gateway, token: str) -> ClientConnection:
        """An authenticated client (``?token=``)."""
        ws = await connect(f"{gateway.url}?token={token}")
        assert (await WsHelpers.recv(ws))["type"] == "authenticated"
        return ws

    @staticmethod
    async def subscribe(ws: ClientConnection, conversation_id: str, after: str | None = None) -> None:
        message: dict[str, Any] = {"type": "subscribe", "conversation_id": conversation_id}
        if after is not None:
            message["after"] = after
        await ws.send(orjson.dumps(message).decode())
        reply = await WsHelpers.recv(ws)
        assert reply == {"type": "subscribed", "conversation_id": conversation_id}, reply


@pytest.fixture(scope="session")
def kit() -> WsHelpers:
    return WsHelpers()


@pytest.fixture(scope="session")
def raw_client() -> type[RawClient]:
    return RawClient


class RawClient:
    """A client that reads only when asked, through a small socket buffer: a truly slow reader.

    (The ``websockets`` client keeps reading into memory whatever its ``max_queue``.)"""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: ClientProtocol
    ) -> None:
        self._reader, self._writer, self._proto = reader, writer, proto
        self._messages: list[bytes] = []

    @classmethod
    async def open(cls, gateway: Gateway, token: str, buffer_bytes: int = 16_384) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=buffer_bytes)
        proto = ClientProtocol(parse_uri(f"{gateway.url}?token={token}"))
        proto.send_request(proto.connect())
        client = cls(reader, writer, proto)
        client._flush()
        assert orjson.loads(await client.recv())["type"] == "authenticated"
        return client

    def _flush(self) -> None:
        self._writer.write(b"".join(self._proto.data_to_send()))

    async def send(self, text: str) -> None:
        self._proto.send_text(text.encode())
        self._flush()
        await self._writer.drain()

    async def recv(self, timeout_s: float = 10) -> bytes:
        """The next text message; ``EOFError`` once the server closed (see ``close_code``)."""
        async with asyncio.timeout(timeout_s):
            while not self._messages:
                if self._proto.close_rcvd is not None:
                    raise EOFError
                data = await self._reader.read(65_536)
                if not data:
                    raise EOFError
                self._proto.receive_data(data)
                for event in self._proto.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        self._messages.append(event.data)
                self._flush()  # pongs and the close handshake
        return self._messages.pop(0)

    @property
    def close_code(self) -> int | None:
        return self._proto.close_rcvd.code if self._proto.close_rcvd is not None else None

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
