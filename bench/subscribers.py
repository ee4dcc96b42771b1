"""The fan-out scenario's two sides: many subscribed WebSocket clients, and the Coca event producer.

``Subscribers`` opens ``n`` connections (``per_conversation`` of them on each conversation), waits
for each to be authenticated and subscribed, and counts deliveries during a round. ``CocaProducer``
emits what the agent emits: each envelope is appended to the conversation's Redis event log (which
assigns ``seq``) and produced to Kafka ``agent.events`` keyed by conversation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from coca_platform.cache import open_redis
from coca_platform.envelope import new_envelope
from coca_platform.eventlog import EventLog
from coca_platform.kafka import KafkaProducer, open_producer

from bench.procs import BenchError
from bench.wsclient import Deliveries, WsClient, connect

# Connections set up at once. ws_gateway's Redis pool (64 connections, non-blocking) refuses a
# subscription storm much wider than this with MaxConnectionsError.
_CONNECT_CONCURRENCY = 16
_CONNECT_ATTEMPTS = 3
_CONTROL_TIMEOUT_S = 30.0
_MAX_EVENTS = 10_000_000


class Subscriber:
    def __init__(self) -> None:
        self.control: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.client: WsClient | None = None

    def on_control(self, data: bytes) -> None:
        self.control.put_nowait(orjson.loads(data))

    async def expect(self, kind: str) -> dict[str, object]:
        async with asyncio.timeout(_CONTROL_TIMEOUT_S):
            while True:
                msg = await self.control.get()
                if msg.get("type") == kind:
                    return msg
                if msg.get("type") == "error":
                    raise BenchError(f"the server refused: {msg}")


class Subscribers:
    def __init__(
        self, host: str, port: int, path: str, conversations: list[str], per_conversation: int
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self.conversations = conversations
        self.per_conversation = per_conversation
        self.subs: list[Subscriber] = []
        self.retries = 0  # connections refused and made again during setup

    async def open(self) -> None:
        gate = asyncio.Semaphore(_CONNECT_CONCURRENCY)

        async def attempt(cid: str) -> Subscriber:
            sub = Subscriber()
            sub.client = await connect(self._host, self._port, self._path, sub.on_control)
            try:
                await sub.expect("authenticated")
                sub.client.send_text(orjson.dumps({"type": "subscribe", "conversation_id": cid}))
                await sub.expect("subscribed")
            except BaseException:
                sub.client.close()
                raise
            return sub

        async def one(cid: str) -> Subscriber:
            async with gate:
                for tries in range(1, _CONNECT_ATTEMPTS + 1):
                    try:
                        return await attempt(cid)
                    except (BenchError, OSError, TimeoutError):
                        if tries == _CONNECT_ATTEMPTS:
                            raise
                        self.retries += 1
                        await asyncio.sleep(0.2 * tries)
                raise AssertionError("unreachable")

        wanted = [cid for cid in self.conversations for _ in range(self.per_conversation)]
        self.subs = list(await asyncio.gather(*(one(cid) for cid in wanted)))

    def listen(self, deliveries: Deliveries | None) -> None:
        for sub in self.subs:
            assert sub.client is not None
            sub.client.deliveries = deliveries

    def dropped(self) -> int:
        return sum(1 for s in self.subs if s.client is not None and s.client.closed.done())

    async def close(self) -> None:
        for sub in self.subs:
            if sub.client is not None:
                sub.client.close()
        self.subs.clear()
        await asyncio.sleep(0.2)


async def drain(deliveries: Deliveries, expected: int, timeout_s: float) -> None:
    """Wait (bounded) until ``expected`` deliveries arrived or nothing arrives for a while."""
    deadline = time.perf_counter() + timeout_s
    last, quiet_since = deliveries.count, time.perf_counter()
    while deliveries.count < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        if deliveries.count != last:
            last, quiet_since = deliveries.count, time.perf_counter()
        elif time.perf_counter() - quiet_since > 2.0:
            return


class CocaProducer:
    """Appends to the event log and produces to Kafka, open loop at ``rate`` events/s."""

    def __init__(self, log: EventLog, producer: KafkaProducer, tenant: str) -> None:
        self._log, self._producer, self.tenant = log, producer, tenant
        self._run_id = str(uuid.uuid4())

    @classmethod
    @asynccontextmanager
    async def open(cls, redis_url: str, bootstrap: str, tenant: str) -> AsyncIterator[CocaProducer]:
        async with (
            open_redis(redis_url) as redis,
            open_producer(bootstrap, client_id="bench-producer") as producer,
        ):
            yield cls(EventLog(redis), producer, tenant)

    async def own(self, conversations: list[str]) -> None:
        for cid in conversations:
            await self._log.set_owner(cid, self.tenant)

    async def _emit(self, cid: str, n: int) -> None:
        envelope = new_envelope(
            "message.delta",
            source="agent",
            tenant_id=self.tenant,
            subject=cid,
            data={"run_id": self._run_id, "text": f" tok{n}", "t": time.monotonic_ns()},
        )
        _, raw = await self._log.append(envelope)
        self._producer.produce_nowait("agent.events", raw, key=cid)

    async def run(self, rate: float, duration_s: float, conversations: list[str]) -> int:
        """Emit events round-robin over ``conversations``; each tick's events go out concurrently (one
        per conversation at most, so each conversation's order holds). Returns how many."""
        total = min(_MAX_EVENTS, max(1, int(rate * duration_s)))
        start = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1, sent + len(conversations))
            await asyncio.gather(
                *(self._emit(conversations[i % len(conversations)], i) for i in range(sent, due))
            )
            sent = due
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        return sent
