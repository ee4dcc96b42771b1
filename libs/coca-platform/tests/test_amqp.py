"""RabbitMQ topology, confirmed publishing and the consumer runner, against the real broker.

The brief's topology is declared for real (idempotent); behaviour tests declare their own exchange
and queues with unique names through the same functions, and delete them afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import AMQPError, ChannelPreconditionFailed
from coca_platform import amqp
from coca_platform.cache import open_redis
from coca_platform.envelope import Envelope, new_envelope
from coca_platform.errors import InvalidArgument, Unavailable
from coca_platform.kafka import RedisDeduper
from coca_platform.localinfra import LocalInfra
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

Unique = Callable[[str], str]


async def _result(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


def _envelope(n: int = 0) -> Envelope:
    return new_envelope("test.happened", source="test", tenant_id="tenant-1", subject="s-1", data={"n": n})


async def _eventually(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await _result(check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _get(channel: AbstractChannel, queue: str, timeout_s: float = 10.0) -> AbstractIncomingMessage:
    """The next message of ``queue`` (acked), waiting for it."""
    source = await channel.get_queue(queue)
    deadline = time.monotonic() + timeout_s
    while (message := await source.get(no_ack=True, fail=False)) is None:
        assert time.monotonic() < deadline, f"no message in {queue!r}"
        await asyncio.sleep(0.02)
    return message


async def _drain(
    channel: AbstractChannel, queue: str, settle_s: float = 0.3
) -> list[AbstractIncomingMessage]:
    """Take (and ack) every message of ``queue`` until none arrives for ``settle_s``. (A quorum queue's
    declare-ok message count is always 0 on RabbitMQ 3.10, so counting means taking.)"""
    source = await channel.get_queue(queue)
    taken: list[AbstractIncomingMessage] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle_s:
        message = await source.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.02)
        else:
            taken.append(message)
            quiet_since = time.monotonic()
    return taken


@pytest.fixture
async def connection(infra: LocalInfra) -> AsyncIterator[AbstractRobustConnection]:
    async with await amqp.open_connection(infra.amqp_url, name="test") as conn:
        yield conn


@pytest.fixture
async def channel(connection: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    async with connection.channel() as ch:
        yield ch


@pytest.fixture
async def work(connection: AbstractRobustConnection, unique: Unique) -> AsyncIterator[amqp.QueueSpec]:
    """A work queue of our own: exchange ``t-…`` (direct) → queue ``t-….q`` (key ``k``), 0.2 s retry."""
    exchange = unique("t")
    spec = amqp.QueueSpec(f"{exchange}.q", (amqp.BindingSpec(exchange, "k"),), retry_delays_s=(0.2,))
    async with connection.channel() as ch:
        await amqp.declare_exchange(ch, amqp.ExchangeSpec(amqp.DLX, "direct"))
        await amqp.declare_exchange(ch, amqp.ExchangeSpec(exchange, "direct"))
        await amqp.declare_queue(ch, spec)
    yield spec
    async with connection.channel() as ch:
        for delay in (0.2, 0.4, *amqp.DEFAULT_RETRY_DELAYS_S):  # those that consume() declared
            await ch.queue_delete(amqp.retry_queue_name(spec.name, delay))
        for name in (spec.name, spec.dlq):
            await ch.queue_delete(name)
        await ch.exchange_delete(exchange)


@asynccontextmanager
async def _consuming(
    connection: AbstractRobustConnection, queue: str, handler: amqp.Handler, **options: Any
) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(amqp.consume(connection, queue, handler, stop=stop, **options))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _publish(connection: AbstractRobustConnection, spec: amqp.QueueSpec, *envelopes: Envelope) -> None:
    async with amqp.open_publisher(connection, app_id="test") as pub:
        await pub.publish_many(spec.bindings[0].exchange, [("k", e) for e in envelopes])


async def test_topology_declares_twice_and_matches_the_brief(
    connection: AbstractRobustConnection, channel: AbstractChannel
) -> None:
    await amqp.declare_topology(channel)
    await amqp.declare_topology(channel)  # idempotent

    topo = amqp.TOPOLOGY
    assert {(e.name, e.kind) for e in topo.exchanges} == {
        ("dlx", "direct"), ("channel.inbound", "topic"), ("channel.outbound", "direct"),
        ("notification", "topic"), ("document", "direct"), ("plugin", "fanout"),
    }  # fmt: skip
    bindings = {q.name: {(b.exchange, b.routing_key) for b in q.bindings} for q in topo.queues}
    assert bindings == {
        **{f"channel.inbound.{t}": {("channel.inbound", f"{t}.#")}
           for t in ("webhook", "telegram", "slack", "feishu", "email")},
        "channel.outbound": {("channel.outbound", "channel.outbound")},
        "notification.email": {("notification", "email.#")},
        "notification.push": {("notification", "push.#")},
        "document.index": {("document", "index")},
    }  # fmt: skip
    for spec in topo.queues:
        args = spec.arguments()
        assert args["x-queue-type"] == "quorum"
        assert args["x-delivery-limit"] >= 4
        assert (args["x-dead-letter-exchange"], args["x-dead-letter-routing-key"]) == ("dlx", spec.name)
        assert args.get("x-message-ttl") == (86_400_000 if spec.name.startswith("notification.") else None)
        for name in (spec.name, spec.dlq, *spec.retry_queues):
            await channel.get_queue(name)  # exists on the broker (passive declare)
    assert [(f.exchange, f.dlq) for f in topo.fanouts] == [("plugin", "plugin.dlq")]
    await channel.get_queue("plugin.dlq")

    # The broker holds exactly these arguments: a different TTL is refused as inequivalent.
    async with connection.channel() as other:
        args = {**topo.queue("notification.email").arguments(), "x-message-ttl": 1000}
        with pytest.raises(ChannelPreconditionFailed):
            await other.declare_queue("notification.email", durable=True, arguments=args)


async def test_topic_binding_routes_bare_and_dotted_keys(
    connection: AbstractRobustConnection, channel: AbstractChannel, unique: Unique
) -> None:
    exchange = unique("t")
    spec = amqp.QueueSpec(f"{exchange}.email", (amqp.BindingSpec(exchange, "email.#"),), retry_delays_s=())
    await amqp.declare_exchange(channel, amqp.ExchangeSpec(exchange, "topic"))
    await amqp.declare_queue(channel, spec)
    try:
        async with amqp.open_publisher(connection, app_id="test") as pub:
            bare, dotted = _envelope(1), _envelope(2)
            await pub.publish(exchange, "email", bare)
            await pub.publish(exchange, "email.welcome", dotted)
            with pytest.raises(Unavailable, match="reached no queue"):
                await pub.publish(exchange, "emailx", _envelope(3))
        assert sorted(m.message_id or "" for m in await _drain(channel, spec.name)) == sorted(
            [bare.id, dotted.id]
        )
    finally:
        for name in (spec.name, spec.dlq):
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange)


async def test_published_message_is_persistent_json_with_envelope_id(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec
) -> None:
    envelope = _envelope()
    await _publish(connection, work, envelope)
    message = await _get(channel, work.name)
    assert message.message_id == envelope.id
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.app_id == "test"
    assert Envelope.from_json(message.body) == envelope


async def test_publish_then_consume_acks_after_handler(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec
) -> None:
    sent = [_envelope(i) for i in range(50)]
    await _publish(connection, work, *sent)  # concurrent, all confirmed
    received: list[Envelope] = []

    async def handler(envelope: Envelope) -> None:
        received.append(envelope)

    async with _consuming(connection, work.name, handler):
        await _eventually(lambda: len(received) == 50)
    assert sorted(e.id for e in received) == sorted(e.id for e in sent)
    assert await _drain(channel, work.name) == []  # all acked: none came back when the consumer closed
    assert await _drain(channel, work.dlq) == []


async def test_unroutable_publish_raises_unavailable(
    connection: AbstractRobustConnection, work: amqp.QueueSpec
) -> None:
    async with amqp.open_publisher(connection, app_id="test") as pub:
        with pytest.raises(Unavailable, match="reached no queue"):
            await pub.publish(work.bindings[0].exchange, "no-such-key", _envelope())


async def test_publish_to_a_missing_exchange_raises_unavailable_then_recovers(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec, unique: Unique
) -> None:
    envelope = _envelope()
    async with amqp.open_publisher(connection, app_id="test") as pub:
        with pytest.raises(Unavailable, match="NOT_FOUND"):
            await pub.publish(unique("missing"), "k", envelope)
        # the broker closed the channel; the robust channel reopens and a retry goes through
        await _eventually(partial(_published, pub, work.bindings[0].exchange, envelope))
    assert [m.message_id for m in await _drain(channel, work.name)] == [envelope.id]


async def _published(pub: amqp.Publisher, exchange: str, envelope: Envelope) -> bool:
    try:
        await pub.publish(exchange, "k", envelope)
    except Unavailable:
        return False
    return True


async def test_always_failing_handler_runs_max_attempts_then_dead_letters(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec
) -> None:
    calls: list[int] = []

    async def handler(envelope: Envelope) -> None:
        calls.append(envelope.data["n"])
        raise Unavailable("downstream is down")

    envelope = _envelope(7)
    async with _consuming(connection, work.name, handler, max_attempts=3, backoff_s=(0.2,)):
        await _publish(connection, work, envelope)
        dead = await _get(channel, work.dlq)
        await asyncio.sleep(0.5)  # time for a (wrong) further delivery
    assert calls == [7, 7, 7]
    headers = dead.headers
    assert dead.message_id == envelope.id
    assert headers[amqp.REASON] == "max_attempts"
    assert headers[amqp.ATTEMPT] == 3
    assert headers[amqp.ERROR_CODE] == "unavailable"
    assert "downstream is down" in str(headers[amqp.ERROR])
    assert headers[amqp.SOURCE_QUEUE] == work.name
    assert Envelope.from_json(dead.body) == envelope
    assert await _drain(channel, work.name) == []


async def test_retry_waits_at_least_the_backoff(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec
) -> None:
    times: list[float] = []

    async def handler(envelope: Envelope) -> None:
        times.append(time.monotonic())
        if len(times) < 3:
            raise RuntimeError("a bug that goes away")  # unexpected errors are retried too

    async with _consuming(connection, work.name, handler, max_attempts=4, backoff_s=(0.2, 0.4)):
        await _publish(connection, work, _envelope())
        await _eventually(lambda: len(times) == 3)
        await asyncio.sleep(0.3)
    assert len(times) == 3  # succeeded on the third attempt, acked, not delivered again
    assert times[1] - times[0] >= 0.2
    assert times[2] - times[1] >= 0.4
    assert await _drain(channel, work.name) == []
    assert await _drain(channel, work.dlq) == []


async def test_non_retryable_error_dead_letters_after_one_attempt(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec
) -> None:
    calls = 0

    async def handler(envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        raise InvalidArgument("subject is not a document")

    async with _consuming(connection, work.name, handler, backoff_s=(0.2,)):
        await _publish(connection, work, _envelope())
        dead = await _get(channel, work.dlq)
        await asyncio.sleep(0.3)
    assert calls == 1
    assert dead.headers[amqp.REASON] == "non_retryable"
    assert dead.headers[amqp.ERROR_CODE] == "invalid_argument"
    assert dead.headers[amqp.ATTEMPT] == 1


async def test_invalid_body_is_dead_lettered_without_calling_the_handler(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec
) -> None:
    called = False

    async def handler(envelope: Envelope) -> None:
        nonlocal called
        called = True

    exchange = await channel.get_exchange(work.bindings[0].exchange)
    for body in (b"not json", b'{"type": "x"}'):
        await exchange.publish(aio_pika.Message(body, message_id=f"bad-{len(body)}"), "k")
    async with _consuming(connection, work.name, handler, backoff_s=(0.2,)):
        first, second = await _get(channel, work.dlq), await _get(channel, work.dlq)
    assert not called
    assert {first.body, second.body} == {b"not json", b'{"type": "x"}'}
    assert first.headers[amqp.REASON] == second.headers[amqp.REASON] == "invalid_envelope"


async def test_duplicate_envelope_is_handled_once_with_a_deduper(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec,
    infra: LocalInfra, unique: Unique,
) -> None:  # fmt: skip
    handled: list[str] = []

    async def handler(envelope: Envelope) -> None:
        handled.append(envelope.id)

    envelope = _envelope()
    async with open_redis(infra.redis_url) as redis:
        deduper = RedisDeduper(redis, unique("amqp"), ttl_s=60)
        await _publish(connection, work, envelope, _envelope(1))
        await _publish(connection, work, envelope)  # the same envelope again (a publisher retry)
        async with _consuming(connection, work.name, handler, deduper=deduper):
            await _eventually(lambda: len(handled) == 2)
            await asyncio.sleep(0.3)
    assert handled.count(envelope.id) == 1
    assert len(handled) == 2


async def test_handler_continues_the_publishers_trace(
    connection: AbstractRobustConnection, work: amqp.QueueSpec
) -> None:
    seen: list[int] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    tracer = TracerProvider().get_tracer("test")  # a local provider: the global one stays untouched
    with tracer.start_as_current_span("request") as span:
        await _publish(connection, work, _envelope())
        trace_id = span.get_span_context().trace_id
    async with _consuming(connection, work.name, handler):
        await _eventually(lambda: bool(seen))
    assert seen == [trace_id]


async def test_stop_ends_consume_after_running_handlers_finish(
    connection: AbstractRobustConnection, channel: AbstractChannel, work: amqp.QueueSpec
) -> None:
    started: list[str] = []
    finished: list[str] = []

    async def handler(envelope: Envelope) -> None:
        started.append(envelope.id)
        await asyncio.sleep(0.3)
        finished.append(envelope.id)

    await _publish(connection, work, *(_envelope(i) for i in range(10)))
    stop = asyncio.Event()
    task = asyncio.create_task(amqp.consume(connection, work.name, handler, stop=stop, prefetch=2))
    await _eventually(lambda: len(started) >= 1)
    stop.set()
    await asyncio.wait_for(task, 5)
    await asyncio.sleep(0.3)  # nothing runs after consume returned
    assert started == finished
    assert 1 <= len(finished) <= 4
    remaining = await _drain(channel, work.name, settle_s=1.0)  # the rest wait in the queue
    assert len(remaining) == 10 - len(finished)


async def test_consume_of_a_missing_queue_raises_unavailable(
    connection: AbstractRobustConnection, unique: Unique
) -> None:
    async def handler(envelope: Envelope) -> None:
        raise AssertionError("never called")

    with pytest.raises(Unavailable, match="does not exist"):
        await amqp.consume(connection, unique("missing"), handler, stop=asyncio.Event())


async def test_fanout_delivers_to_every_instance_queue(infra: LocalInfra, unique: Unique) -> None:
    exchange = unique("t")
    received: dict[str, list[str]] = {"a": [], "b": []}

    def collect(instance: str) -> amqp.Handler:
        async def handler(envelope: Envelope) -> None:
            received[instance].append(envelope.id)

        return handler

    envelope = _envelope()
    stop = asyncio.Event()
    conns = {i: await amqp.open_connection(infra.amqp_url) for i in ("a", "b")}
    try:
        tasks = [
            asyncio.create_task(
                amqp.consume(conn, f"{exchange}.event.{i}", collect(i), stop=stop, fanout=exchange)
            )
            for i, conn in conns.items()
        ]
        for i, conn in conns.items():  # each exclusive queue is visible to its own connection only
            await _eventually(partial(_queue_exists, conn, f"{exchange}.event.{i}"))
        async with amqp.open_publisher(conns["a"], app_id="test") as pub:
            await pub.publish(exchange, "", envelope)
        await _eventually(lambda: all(received.values()))
        stop.set()
        await asyncio.gather(*tasks)
        async with conns["a"].channel() as ch:
            await ch.queue_delete(f"{exchange}.dlq")
            await ch.exchange_delete(exchange)
    finally:
        for conn in conns.values():
            await conn.close()
    assert received == {"a": [envelope.id], "b": [envelope.id]}


async def _queue_exists(connection: AbstractRobustConnection, name: str) -> bool:
    try:
        async with connection.channel() as ch:
            await ch.get_queue(name)
    except AMQPError:
        return False
    return True


async def test_broker_dead_letters_a_message_returned_past_the_delivery_limit(
    channel: AbstractChannel, unique: Unique
) -> None:
    """The backstop for consumer crash loops: x-delivery-limit with the dlx."""
    spec = amqp.QueueSpec(unique("t"), (), delivery_limit=2, retry_delays_s=())
    await amqp.declare_exchange(channel, amqp.ExchangeSpec(amqp.DLX, "direct"))
    await amqp.declare_queue(channel, spec)
    try:
        await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id="m"), spec.name)
        queue = await channel.get_queue(spec.name)
        for _ in range(3):  # first delivery + 2 returns
            message = await queue.get(timeout=5)
            await message.nack(requeue=True)
        dead = await _get(channel, spec.dlq)
        deaths = dead.headers["x-death"]
        assert isinstance(deaths, list)
        assert isinstance(deaths[0], dict)
        assert deaths[0]["reason"] == "delivery_limit"
        assert await _drain(channel, spec.name) == []
    finally:
        for name in (spec.name, spec.dlq):
            await channel.queue_delete(name)


async def test_ping_fails_once_the_connection_is_closed(infra: LocalInfra) -> None:
    conn = await amqp.open_connection(infra.amqp_url)
    await amqp.ping(conn)
    await conn.close()
    with pytest.raises(Unavailable):
        await amqp.ping(conn)
