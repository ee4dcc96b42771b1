"""The agent's channel worker: ``channel.inbound.webhook`` → one turn (a plain function stands in for the
agent here: the seam the service fills) → ``channel.message.reply`` on ``channel.outbound``. Real
RabbitMQ and Redis. The brief's queue names are global, so where ``rabbitmqctl`` can (a local broker, run
as root) the module gets a vhost of its own, and a running dev stack cannot take its messages; elsewhere
messages are matched by id and others on the shared queues are left alone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from coca_agent.channel_worker import handle_inbound, reply_id, run_channel_worker, thread_key
from coca_platform import amqp
from coca_platform.cache import open_redis
from coca_platform.envelope import Envelope, new_envelope
from coca_platform.errors import InvalidArgument, NotFound, Unavailable
from coca_platform.kafka import RedisDeduper
from coca_platform.localinfra import LocalInfra

Turn = tuple[str, str, str, str]


class FakeAgent:
    """``run_turn`` for the tenants it knows (others: no reply); ``failures`` raise before answering."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.turns: list[Turn] = []
        self.failures: list[Exception] = []

    async def run_turn(self, tenant_id: str, agent_id: str, key: str, text: str) -> str:
        if tenant_id != self.tenant_id:
            return ""  # a message some other suite left on the shared queue
        self.turns.append((tenant_id, agent_id, key, text))
        if self.failures:
            raise self.failures.pop(0)
        return f"echo: {text}"


def _received(
    tenant_id: str, *, text: str = "hello", thread_id: str | None = "t-1", **extra: Any
) -> Envelope:
    channel_id = str(uuid.uuid4())
    data = {
        "channel_id": channel_id,
        "agent_id": str(uuid.uuid4()),
        "thread_id": thread_id,
        "sender": {"id": "u-7", "name": "Ada"},
        "text": text,
        "inbound_id": str(uuid.uuid4()),
        "message_id": "msg-42",
    } | extra
    return new_envelope(
        "channel.message.received", source="channel", tenant_id=tenant_id, subject=channel_id, data=data
    )


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent(str(uuid.uuid4()))


@pytest.fixture(scope="session")
def amqp_url(infra: LocalInfra) -> str:
    """The session's RabbitMQ (a vhost of its own: see ``coca_platform.testing``)."""
    return infra.amqp_url


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    async with await amqp.open_connection(amqp_url, name="channel worker tests") as connection:
        async with connection.channel() as channel:
            await amqp.declare_topology(channel)
        yield connection


@pytest.fixture
async def mq(broker: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    async with broker.channel() as channel:
        yield channel


@asynccontextmanager
async def _worker(infra: LocalInfra, amqp_url: str, agent: FakeAgent) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with open_redis(infra.redis_url) as redis:
        task = asyncio.create_task(
            run_channel_worker(
                amqp_url,
                run_turn=agent.run_turn,
                stop=stop,
                deduper=RedisDeduper(redis, f"test-channel-worker-{uuid.uuid4().hex}"),
                backoff_s=(0.1,),
            )
        )
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


async def _publish(broker: AbstractRobustConnection, *envelopes: Envelope) -> None:
    async with amqp.open_publisher(broker, app_id="test") as publisher:
        for envelope in envelopes:
            await publisher.publish("channel.inbound", "webhook", envelope)


async def _take(
    mq: AbstractChannel, queue: str, match: Callable[[AbstractIncomingMessage], bool], settle_s: float = 0.0
) -> list[AbstractIncomingMessage]:
    """Every message of ``queue`` that ``match`` es, waiting up to 10 s for the first (and ``settle_s``
    after it for more); others are put back untouched."""
    source = await mq.get_queue(queue)
    found: list[AbstractIncomingMessage] = []
    others: list[AbstractIncomingMessage] = []
    deadline, settle_until = time.monotonic() + 10, None
    try:
        while True:
            message = await source.get(no_ack=False, fail=False)
            if message is not None:
                (found if match(message) else others).append(message)
                if found and settle_until is None:
                    settle_until = time.monotonic() + settle_s
                continue
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            assert time.monotonic() < deadline, f"nothing matching in {queue!r}"
            await asyncio.sleep(0.02)
    finally:
        for other in others:
            await other.nack(requeue=True)
    for message in found:
        await message.ack()
    return found


def _replying_to(inbound: Envelope) -> Callable[[AbstractIncomingMessage], bool]:
    return lambda message: message.message_id == reply_id(inbound.id)


async def test_channel_message_gets_a_reply_on_channel_outbound(
    infra: LocalInfra,
    amqp_url: str,
    agent: FakeAgent,
    broker: AbstractRobustConnection,
    mq: AbstractChannel,
) -> None:
    inbound = _received(agent.tenant_id, text="what is coca?")

    async with _worker(infra, amqp_url, agent):
        await _publish(broker, inbound)
        (message,) = await _take(mq, "channel.outbound", _replying_to(inbound))

    data = inbound.data
    assert agent.turns == [
        (agent.tenant_id, data["agent_id"], f"channel:{data['channel_id']}:thread:t-1", "what is coca?")
    ]
    reply = Envelope.from_json(message.body)
    assert reply.type == "channel.message.reply"
    assert reply.source == "agent"
    assert reply.tenant_id == agent.tenant_id
    assert reply.subject == data["channel_id"]
    assert reply.data == {
        "channel_id": data["channel_id"],
        "thread_id": "t-1",
        "text": "echo: what is coca?",
        "in_reply_to": "msg-42",
    }


async def test_same_message_delivered_twice_runs_one_turn(
    infra: LocalInfra,
    amqp_url: str,
    agent: FakeAgent,
    broker: AbstractRobustConnection,
    mq: AbstractChannel,
) -> None:
    inbound = _received(agent.tenant_id)

    async with _worker(infra, amqp_url, agent):
        await _publish(broker, inbound, inbound)
        replies = await _take(mq, "channel.outbound", _replying_to(inbound), settle_s=0.5)

    assert len(replies) == 1
    assert len(agent.turns) == 1


async def test_transient_turn_failure_is_retried(
    infra: LocalInfra,
    amqp_url: str,
    agent: FakeAgent,
    broker: AbstractRobustConnection,
    mq: AbstractChannel,
) -> None:
    agent.failures.append(Unavailable("LLM busy"))
    inbound = _received(agent.tenant_id)

    async with _worker(infra, amqp_url, agent):
        await _publish(broker, inbound)
        replies = await _take(mq, "channel.outbound", _replying_to(inbound), settle_s=0.3)

    assert len(replies) == 1
    assert len(agent.turns) == 2


async def test_permanent_turn_failure_is_dead_lettered_without_a_reply(
    infra: LocalInfra,
    amqp_url: str,
    agent: FakeAgent,
    broker: AbstractRobustConnection,
    mq: AbstractChannel,
) -> None:
    agent.failures.append(NotFound("no such agent"))
    inbound = _received(agent.tenant_id)

    async with _worker(infra, amqp_url, agent):
        await _publish(broker, inbound)
        (dead,) = await _take(mq, "channel.inbound.webhook.dlq", lambda m: m.message_id == inbound.id)

    assert dead.headers[amqp.REASON] == "non_retryable"
    assert dead.headers[amqp.ERROR_CODE] == "not_found"
    assert len(agent.turns) == 1


async def test_reply_id_is_stable_so_a_rerun_turn_is_not_sent_twice(agent: FakeAgent) -> None:
    inbound = _received(agent.tenant_id)

    first = await handle_inbound(inbound, run_turn=agent.run_turn)
    second = await handle_inbound(inbound, run_turn=agent.run_turn)

    assert first is not None
    assert second is not None
    assert first.id == second.id == reply_id(inbound.id)
    assert first.id != inbound.id


async def test_empty_answer_sends_no_reply() -> None:
    async def silent(tenant_id: str, agent_id: str, key: str, text: str) -> str:
        return "  "

    assert await handle_inbound(_received(str(uuid.uuid4())), run_turn=silent) is None


@pytest.mark.parametrize(
    "envelope",
    [
        new_envelope("channel.message.reply", source="x", tenant_id="t", subject="s", data={}),
        _received("t", text=""),
        _received("t", channel_id="not-a-uuid"),
    ],
)
async def test_malformed_inbound_message_is_refused(agent: FakeAgent, envelope: Envelope) -> None:
    with pytest.raises(InvalidArgument):
        await handle_inbound(envelope, run_turn=agent.run_turn)
    assert agent.turns == []


def test_thread_key_follows_thread_then_sender_then_channel() -> None:
    assert thread_key("c", "t", "u") == "channel:c:thread:t"
    assert thread_key("c", None, "u") == "channel:c:sender:u"
    assert thread_key("c", None, None) == "channel:c"
