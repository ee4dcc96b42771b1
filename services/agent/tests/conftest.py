"""Fixtures for the agent service's tests: real PostgreSQL, Redis and Kafka (from ``infra``), the
LLM stand-in in-process on a free port, the app in-process (REST) and under uvicorn (streaming).

Test settings shorten the LLM timeouts (first chunk 5 s, idle 1 s) so stalls fail fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import httpx
import orjson
import pytest
from coca_agent.app import create_app
from coca_agent.settings import Settings
from coca_llm_standin import run_standin
from coca_platform.identity import Identity
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import (
    asgi_client,
    create_topic,
    migrate_for_tests,
    schema_connection,
    serve_asgi,
    signed_headers,
)
from confluent_kafka import Consumer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

EVENTS_TOPIC = "agent.events"
USAGE_TOPIC = "usage.records"


def make_settings(infra: LocalInfra, llm_base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": infra.database_url,
        "redis_url": infra.redis_url,
        "kafka_bootstrap": infra.kafka_bootstrap,
        "llm_base_url": llm_base_url,
        "llm_timeout_s": 5,
        "llm_idle_timeout_s": 1,
        "db_pool_max": 4,
        # Peers are opted in per test: quotas (billing) and tools (plugin) are off by default here.
        "billing_service_addr": "",
        "plugin_service_addr": "",
        "memory_grpc_addr": "",
        "channel_worker_enabled": False,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="session", autouse=True)
def tracing() -> None:
    """Real (unexported) spans, so trace ids exist and travel in Kafka headers and logs."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


@pytest.fixture(scope="session")
async def prepared(infra: LocalInfra) -> LocalInfra:
    await migrate_for_tests(infra.database_url, schema="coca_agent", package="coca_agent")
    await create_topic(infra.kafka_bootstrap, EVENTS_TOPIC, partitions=8)
    await create_topic(infra.kafka_bootstrap, USAGE_TOPIC, partitions=4)
    return infra


@pytest.fixture(scope="session")
async def standin_url() -> AsyncIterator[str]:
    async with run_standin(port=0) as url:
        yield url


@pytest.fixture(scope="session")
def settings(prepared: LocalInfra, standin_url: str) -> Settings:
    return make_settings(prepared, standin_url)


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings)) as http:
        yield http


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app under uvicorn on a free port (real streaming and disconnects), with a client for it.
    Shutting down gives open streams 1 s, then cancels them (and the runs)."""
    async with (
        serve_asgi(create_app(settings), timeout_graceful_shutdown=1) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        yield http


@pytest.fixture(scope="session")
def serve() -> Callable[[Settings], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]:
    return serving


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings) as http:
        yield http


@pytest.fixture(scope="session")
async def db(prepared: LocalInfra) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, to look at the rows the service wrote."""
    async with schema_connection(prepared.database_url, "coca_agent") as conn:
        yield conn


@dataclass
class Tenant:
    """A tenant with a member; ``headers(role=..., user=...)`` signs identities inside it."""

    secret: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def headers(self, *, role: str = "member", user_id: str | None = None) -> dict[str, str]:
        identity = Identity(tenant_id=self.id, user_id=user_id or self.user_id, role=role)
        return signed_headers(identity, self.secret)


@pytest.fixture
def new_tenant(settings: Settings) -> Callable[[], Tenant]:
    return lambda: Tenant(settings.internal_secret.get_secret_value())


@pytest.fixture
def tenant(new_tenant: Callable[[], Tenant]) -> Tenant:
    return new_tenant()


@dataclass
class SseEvent:
    id: str
    event: str
    data: bytes

    @property
    def envelope(self) -> dict[str, Any]:
        return dict(orjson.loads(self.data))


def parse_sse(text: str) -> list[SseEvent]:
    """Events of an SSE body (comments such as ``: ping`` are skipped)."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if fields:
            events.append(SseEvent(fields["id"], fields["event"], fields["data"].encode()))
    return events


class KafkaEvents:
    """Every record of a topic (``agent.events`` by default) since it was created, grouped by key."""

    def __init__(self, bootstrap: str, topic: str = EVENTS_TOPIC) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"agent-tests-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self._lock = threading.Lock()
        self._by_key: dict[str, list[tuple[bytes, dict[str, bytes]]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-tests-kafka", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, 0.2):
                key, value = msg.key(), msg.value()
                if msg.error() is None and isinstance(key, bytes) and isinstance(value, bytes):
                    headers = dict(cast(list[tuple[str, bytes]], msg.headers() or []))
                    with self._lock:
                        self._by_key[key.decode()].append((value, headers))

    async def records(
        self, key: str, until: Callable[[list[tuple[bytes, dict[str, bytes]]]], bool], timeout_s: float = 30
    ) -> list[tuple[bytes, dict[str, bytes]]]:
        """The records of ``key`` once ``until(records)`` holds (fails after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            while True:
                with self._lock:
                    found = list(self._by_key[key])
                if until(found):
                    return found
                await asyncio.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


@pytest.fixture(scope="session")
def kafka_events(prepared: LocalInfra) -> Iterator[KafkaEvents]:
    events = KafkaEvents(prepared.kafka_bootstrap)
    try:
        yield events
    finally:
        events.close()


class ChatApi:
    """Calls the agent service as the gateway would, for one client (in-process or over a socket)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def create_agent(self, tenant: Tenant, **fields: Any) -> dict[str, Any]:
        body = {"name": "helper", "system_prompt": "Be brief.", **fields}
        response = await self.http.post("/v1/agents", json=body, headers=tenant.headers())
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def create_conversation(self, tenant: Tenant, **agent_fields: Any) -> str:
        agent = await self.create_agent(tenant, **agent_fields)
        response = await self.http.post(
            "/v1/conversations", json={"agent_id": agent["id"]}, headers=tenant.headers()
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def stream(self, tenant: Tenant, conversation_id: str, content: str) -> list[SseEvent]:
        """POST a message with ``Accept: text/event-stream`` and read the whole stream."""
        headers = {**tenant.headers(), "accept": "text/event-stream"}
        response = await self.http.post(
            f"/v1/conversations/{conversation_id}/messages", json={"content": content}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.text)

    async def replay(
        self, tenant: Tenant, conversation_id: str, after: str | None = None, **headers: str
    ) -> httpx.Response:
        params = {"after": after} if after else {}
        return await self.http.get(
            f"/v1/conversations/{conversation_id}/events",
            params=params,
            headers={**tenant.headers(), **headers},
        )

    async def messages(self, tenant: Tenant, conversation_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"/v1/conversations/{conversation_id}/messages", headers=tenant.headers()
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


@pytest.fixture(scope="session")
def api(client: httpx.AsyncClient) -> ChatApi:
    return ChatApi(client)


@pytest.fixture(scope="session")
def live(server: httpx.AsyncClient) -> ChatApi:
    return ChatApi(server)


@pytest.fixture(scope="session")
def sse() -> Callable[[str], list[SseEvent]]:
    return parse_sse


@pytest.fixture(scope="session")
def usage_records(prepared: LocalInfra) -> Iterator[KafkaEvents]:
    """Every record of ``usage.records``, grouped by key (tenant id)."""
    events = KafkaEvents(prepared.kafka_bootstrap, USAGE_TOPIC)
    try:
        yield events
    finally:
        events.close()
