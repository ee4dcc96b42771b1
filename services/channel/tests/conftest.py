"""Fixtures for the channel service's tests: the app in-process over real PostgreSQL, Redis and RabbitMQ
(the brief's exchanges and queues), a webhook receiver (aiohttp) and an SMTP server (aiosmtpd), both on
free ports of 127.0.0.1, which the test egress policy allows (``EGRESS_ALLOWED_HOSTS=127.0.0.1``).

RabbitMQ: ``infra`` gives the test session a vhost of its own (where ``rabbitmqctl`` can make one),
so no other process on the same broker takes this suite's messages.

Test settings shorten retries: replies get 3 attempts 0.1 s apart, notifications keep the brief's 4
(1 + 3 retries) 0.1 s apart. The app runs per test module, so its consumers of ``channel.outbound``
and ``notification.*`` are gone when other suites run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from coca_channel.app import create_app
from coca_channel.settings import Settings
from coca_platform import amqp
from coca_platform.envelope import Envelope
from coca_platform.identity import Identity
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import (
    asgi_client,
    free_port,
    migrate_for_tests,
    schema_connection,
    serve_aiohttp,
    signed_headers,
)

OUTBOUND_MAX_ATTEMPTS = 3
NOTIFICATION_ATTEMPTS = 4  # the brief: exactly 3 retries, then the dead-letter queue
RETRY_DELAY_S = 0.1


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Answers ``POST /<name>`` with ``statuses[name]`` (200 by default) and records every request."""

    url: str = ""
    hits: dict[str, list[Hit]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, int] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name].append(Hit(dict(request.headers), await request.read()))
        return web.json_response({"ok": True}, status=self.statuses.get(name, 200))


@dataclass
class Mailbox:
    """An SMTP server's view: recipients ``fail-*`` get ``451`` (try later); others are accepted."""

    host: str = "127.0.0.1"
    port: int = 0
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages: list[SmtpEnvelope] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str, options: list[str]
    ) -> str:
        self.attempts[address] += 1
        if address.startswith("fail-"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def make_settings(infra: LocalInfra, amqp_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": infra.database_url,
        "redis_url": infra.redis_url,
        "amqp_url": amqp_url,
        "db_pool_max": 4,
        "public_base_url": "https://api.coca.test",
        "egress_allowed_hosts": "127.0.0.1",
        "outbound_max_attempts": OUTBOUND_MAX_ATTEMPTS,
        "outbound_backoff_s": (RETRY_DELAY_S,),
        "outbound_timeout_s": 2.0,
        "notification_backoff_s": (RETRY_DELAY_S,),
        "push_timeout_s": 2.0,
        "smtp_timeout_s": 2.0,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="session")
def amqp_url(infra: LocalInfra) -> str:
    """The session's RabbitMQ (a vhost of its own: see ``coca_platform.testing``)."""
    return infra.amqp_url


@pytest.fixture(scope="session")
async def migrated(infra: LocalInfra) -> LocalInfra:
    await migrate_for_tests(infra.database_url, schema="coca_channel", package="coca_channel")
    return infra


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", found.handle)
    async with serve_aiohttp(app) as url:
        found.url = url
        yield found


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def settings(migrated: LocalInfra, amqp_url: str, mailbox: Mailbox) -> Settings:
    return make_settings(migrated, amqp_url, smtp_host=mailbox.host, smtp_port=mailbox.port)


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings)) as http:
        yield http


@pytest.fixture(scope="session")
async def db(migrated: LocalInfra) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, to look at the rows the service wrote."""
    async with schema_connection(migrated.database_url, "coca_channel") as conn:
        yield conn


@pytest.fixture(scope="session")
async def broker(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    async with await amqp.open_connection(amqp_url, name="channel tests") as connection:
        async with connection.channel() as channel:
            await amqp.declare_topology(channel)
        yield connection


@pytest.fixture
async def mq(broker: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    async with broker.channel() as channel:
        yield channel


@dataclass(frozen=True)
class Tenant:
    id: str
    user_id: str
    headers: dict[str, str]


@pytest.fixture
def new_tenant(settings: Settings) -> Callable[[], Tenant]:
    """A fresh tenant and the identity headers the gateway would sign for one of its users."""
    secret = settings.internal_secret.get_secret_value()

    def make() -> Tenant:
        tenant_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        return Tenant(tenant_id, user_id, signed_headers(Identity(tenant_id, user_id, role="owner"), secret))

    return make


@pytest.fixture
def system_headers(settings: Settings) -> dict[str, str]:
    identity = Identity(tenant_id="-", user_id="service:test", role="system")
    return signed_headers(identity, settings.internal_secret.get_secret_value())


Match = Callable[[AbstractIncomingMessage], bool]


@pytest.fixture
def take(mq: AbstractChannel) -> Callable[..., Awaitable[list[AbstractIncomingMessage]]]:
    """``await take(queue, match, count=1, timeout_s=10, settle_s=0)``: the first ``count`` messages of
    ``queue`` that ``match`` (acked); others seen meanwhile are returned to the queue untouched. With
    ``settle_s``, keeps looking that long after the last match and returns every match found."""

    async def run(
        queue: str, match: Match, count: int = 1, timeout_s: float = 10.0, settle_s: float = 0.0
    ) -> list[AbstractIncomingMessage]:
        source = await mq.get_queue(queue)
        found: list[AbstractIncomingMessage] = []
        others: list[AbstractIncomingMessage] = []
        deadline, settled_at = time.monotonic() + timeout_s, None
        try:
            while True:
                message = await source.get(no_ack=False, fail=False)
                if message is not None:
                    (found if match(message) else others).append(message)
                    if len(found) >= count and settled_at is None:
                        settled_at = time.monotonic() + settle_s
                    continue
                now = time.monotonic()
                if settled_at is not None and now >= settled_at:
                    break
                assert now < deadline, f"{len(found)} of {count} messages found in {queue!r}"
                await asyncio.sleep(0.02)
        finally:
            for other in others:
                await other.nack(requeue=True)
        for message in found:
            await message.ack()
        return found

    return run


@pytest.fixture
def publish(broker: AbstractRobustConnection) -> Callable[[str, str, Envelope], Awaitable[None]]:
    async def run(exchange: str, routing_key: str, envelope: Envelope) -> None:
        async with amqp.open_publisher(broker, app_id="channel-tests") as publisher:
            await publisher.publish(exchange, routing_key, envelope)

    return run


async def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def wait_for() -> Callable[..., Awaitable[None]]:
    return eventually
