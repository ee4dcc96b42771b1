"""RabbitMQ: connections, readiness, confirmed publishing of envelopes and the consumer runner.
Topology, retry and dead-letter conventions: ``_amqp_topology`` (re-exported here).

Publishing waits for the broker's confirm; an unroutable message (published ``mandatory``) or a
nack raises ``Unavailable``. ``publish_many`` keeps up to ``window`` confirms in flight at once.

``consume`` validates each body into an ``Envelope`` (else it is poison: dead-lettered, reason
``invalid_envelope``) and runs the handler in a CONSUMER span continuing the publisher's trace. It
acks only after the handler returned, so a handler makes its effect durable before returning. A
retryable ``CocaError`` or any other exception is retried after ``backoff_s[attempt - 1]`` (the
last value repeats); a non-retryable one, or the ``max_attempts``-th failure, dead-letters.

Delivery is at least once: **handlers must be idempotent** (upsert by envelope id, or record ids
in the transaction of the effect). An optional ``deduper`` (``async first_seen(ids) -> list[bool]``,
e.g. Redis ``SET NX``) drops further copies of an envelope; it is asked only on a first delivery,
never on retries or broker redeliveries (whose first try may have died half-way).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, DeliveryMode
from aiormq.exceptions import ChannelNotFoundEntity, PublishError
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AnyValue

# fmt: off
from coca_platform._amqp_topology import (  # isort: skip  # the topology is part of this module's API
    AMQP_ERRORS, ATTEMPT, DAY_MS, DEFAULT_RETRY_DELAYS_S, DLX, ERROR, ERROR_CODE, REASON, SOURCE_QUEUE,
    TOPOLOGY, BindingSpec, ExchangeSpec, FanoutSpec, Hop, QueueSpec, Topology, attempt_of, declare_exchange,
    declare_fanout_queue, declare_queue, declare_retry_queue, declare_topology, move, next_hop,
    retry_queue_name,
)
# fmt: on
from coca_platform.envelope import Envelope
from coca_platform.errors import CocaError, Unavailable
from coca_platform.observability import extract_context, inject_headers, tracer

# fmt: off
__all__ = [
    "ATTEMPT", "DAY_MS", "DEFAULT_RETRY_DELAYS_S", "DLX", "ERROR", "ERROR_CODE", "REASON", "SOURCE_QUEUE",
    "TOPOLOGY", "BindingSpec", "Deduper", "ExchangeSpec", "FanoutSpec", "Handler", "Publisher", "QueueSpec",
    "Topology", "consume", "declare_exchange", "declare_fanout_queue", "declare_queue", "declare_topology",
    "open_connection", "open_publisher", "ping", "retry_queue_name",
]
# fmt: on

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]
Connectable = str | AbstractConnection
Headers = Mapping[str, str] | None


class Deduper(Protocol):
    async def first_seen(self, ids: list[str]) -> list[bool]: ...


async def open_connection(
    url: str, *, name: str | None = None, timeout_s: float = 10.0
) -> aio_pika.abc.AbstractRobustConnection:
    """A robust connection: it reconnects, then restores channels, queues and consumers. Close it
    with ``await connection.close()``, or use it as ``async with await open_connection(url) as c``."""
    props: dict[str, Any] = {"connection_name": name or "coca"}
    try:
        return await aio_pika.connect_robust(url, timeout=timeout_s, client_properties=props)
    except AMQP_ERRORS as exc:
        raise Unavailable(f"cannot connect to RabbitMQ: {exc}") from exc


async def ping(connection: AbstractConnection) -> None:
    """Readiness: open and close a channel (one round trip to the broker)."""
    if connection.is_closed:
        raise Unavailable("RabbitMQ connection is closed")
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.close()
    except AMQP_ERRORS as exc:
        raise Unavailable(f"RabbitMQ is not answering: {exc}") from exc


@asynccontextmanager
async def _confirming_channel(target: Connectable, name: str) -> AsyncIterator[AbstractChannel]:
    """A channel with publisher confirms, on ``target`` or on a connection of its own (given a URL)."""
    async with AsyncExitStack() as stack:
        if isinstance(target, str):
            target = await open_connection(target, name=name)
            stack.push_async_callback(target.close)
        try:
            channel = await target.channel(publisher_confirms=True, on_return_raises=True)
        except AMQP_ERRORS as exc:
            raise Unavailable(f"cannot open a RabbitMQ channel: {exc}") from exc
        try:
            yield channel
        finally:
            with suppress(*AMQP_ERRORS):
                await channel.close()


class Publisher:
    """Publishes envelopes with publisher confirms. Use ``open_publisher``."""

    def __init__(self, channel: AbstractChannel, *, app_id: str, window: int, timeout_s: float) -> None:
        self._channel, self._app_id, self._timeout_s = channel, app_id, timeout_s
        self._window = asyncio.Semaphore(window)

    async def publish(
        self, exchange: str, routing_key: str, envelope: Envelope, *, headers: Headers = None
    ) -> None:
        await self.publish_many(exchange, [(routing_key, envelope)], headers=headers)

    async def publish_many(
        self, exchange: str, messages: Iterable[tuple[str, Envelope]], *, headers: Headers = None
    ) -> None:
        """Publish ``(routing_key, envelope)`` pairs concurrently; returns once all are confirmed.
        On ``Unavailable`` some may have been delivered: publish them all again (ids dedupe)."""
        batch = list(messages)
        if not batch:
            return
        attrs: dict[str, AnyValue] = {"messaging.system": "rabbitmq", "messaging.destination.name": exchange,
                                      "messaging.batch.message_count": len(batch)}  # fmt: skip
        with tracer.start_as_current_span(f"{exchange} publish", kind=SpanKind.PRODUCER, attributes=attrs):
            target = await self._channel.get_exchange(exchange, ensure=False)
            traced = inject_headers(dict(headers or {}))
            sent = (self._send(target, key, env, traced) for key, env in batch)
            results = await asyncio.gather(*sent, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:  # a bug (not Unavailable) first, as it is
            first = next((f for f in failures if not isinstance(f, Unavailable)), failures[0])
            if len(batch) == 1 or not isinstance(first, Unavailable):
                raise first
            raise Unavailable(f"{len(failures)} of {len(batch)} messages not confirmed: {first}") from first

    async def _send(
        self, target: aio_pika.abc.AbstractExchange, key: str, env: Envelope, headers: dict[str, str]
    ) -> None:
        message = aio_pika.Message(
            env.to_json(),
            headers=dict(headers),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=env.id,
            type=env.type,
            app_id=self._app_id,
            timestamp=datetime.now(UTC),
        )
        async with self._window:
            try:
                await target.publish(message, key, mandatory=True, timeout=self._timeout_s)
            except PublishError as exc:
                raise Unavailable(f"message {env.id!r} with routing key {key!r} reached no queue") from exc
            except AMQP_ERRORS as exc:  # a nack (DeliveryError), a lost channel, a timeout
                raise Unavailable(f"message {env.id!r} was not confirmed: {exc!r}") from exc


@asynccontextmanager
async def open_publisher(
    url_or_connection: Connectable, *, app_id: str, window: int = 256, confirm_timeout_s: float = 10.0
) -> AsyncIterator[Publisher]:
    """A publisher on its own confirming channel (and its own connection when given a URL)."""
    async with _confirming_channel(url_or_connection, f"{app_id} publisher") as channel:
        yield Publisher(channel, app_id=app_id, window=window, timeout_s=confirm_timeout_s)


@dataclass
class _Runner:
    """Handles the deliveries of one queue on one channel (aio-pika runs each in its own task)."""

    channel: AbstractChannel
    queue: str
    handler: Handler
    hop: Callable[..., Hop]  # next_hop(attempt, reason=...) for this queue
    deduper: Deduper | None
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if self.closed or task is None:
            return  # not acked: it goes back to the queue when the channel closes
        self.inflight.add(task)
        try:
            await self._process(message)
        finally:
            self.inflight.discard(task)

    async def drain(self, timeout_s: float) -> None:
        for _ in range(5):  # let deliveries that arrived before cancel-ok start their tasks
            await asyncio.sleep(0)
        self.closed = True  # any later one is not started: it returns to the queue
        if self.inflight:
            _, pending = await asyncio.wait(set(self.inflight), timeout=timeout_s)
            if pending:
                log.warning("consumer stopped with messages in flight", extra={"data": {"queue": self.queue}})

    async def _process(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        attempt = attempt_of(headers)
        attrs: dict[str, AnyValue] = {"messaging.destination.name": self.queue, "coca.attempt": attempt}
        attrs["messaging.message.id"] = message.message_id or ""
        context, kind = extract_context(headers), SpanKind.CONSUMER
        with tracer.start_as_current_span(f"{self.queue} process", context, kind, attrs) as span:
            try:
                envelope = Envelope.from_json(message.body)
            except ValueError as exc:  # not JSON, or not an envelope (pydantic's ValidationError)
                span.set_status(Status(StatusCode.ERROR, "invalid_envelope"))
                hop = self.hop(attempt, reason="invalid_envelope")
                await move(self.channel, message, hop, "invalid_envelope", f"invalid_envelope: {exc}")
                return
            try:
                if await self._duplicate(envelope, attempt, message.redelivered):
                    log.info(
                        "duplicate message skipped", extra={"data": {"queue": self.queue, "id": envelope.id}}
                    )
                else:
                    await self.handler(envelope)
            except Exception as exc:  # the consumer edge: every failure is retried or dead-lettered
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                await self._fail(message, envelope, attempt, exc)
            else:
                with suppress(*AMQP_ERRORS):  # if the ack is lost, the broker delivers it again
                    await message.ack()

    async def _duplicate(self, envelope: Envelope, attempt: int, redelivered: bool | None) -> bool:
        if self.deduper is None or attempt > 1 or redelivered:
            return False
        (first,) = await self.deduper.first_seen([envelope.id])
        return not first

    async def _fail(
        self, message: AbstractIncomingMessage, env: Envelope, attempt: int, exc: Exception
    ) -> None:
        if isinstance(exc, CocaError):
            code, detail, reason = exc.code, f"{exc.code}: {exc}", None if exc.retryable else "non_retryable"
        else:  # a bug in the handler: logged once, here, with its traceback
            code, detail, reason = "internal", f"internal: {exc!r}", None
            data = {"queue": self.queue, "id": env.id, "type": env.type, "attempt": attempt}
            log.error("message handler raised an unexpected error", exc_info=exc, extra={"data": data})
        await move(self.channel, message, self.hop(attempt, reason=reason), code, detail)


async def consume(
    url_or_connection: Connectable,
    queue: str,
    handler: Handler,
    *,
    stop: asyncio.Event,
    prefetch: int = 32,
    max_attempts: int = 4,
    backoff_s: tuple[float, ...] = DEFAULT_RETRY_DELAYS_S,
    deduper: Deduper | None = None,
    fanout: str | None = None,
    drain_timeout_s: float = 30.0,
) -> None:
    """Run ``handler`` for each message of ``queue`` (up to ``prefetch`` at once) until ``stop`` is set;
    then take no more, let running handlers finish (up to ``drain_timeout_s``) and return.

    A work queue must exist (``declare_topology``); its delay queues for ``backoff_s`` are declared
    here (``()`` retries at once). With ``fanout="plugin"``, ``queue`` is this process's exclusive
    queue on that exchange (``plugin.event.<instance>``), declared here on the consuming channel so
    a reconnect restores it; it retries at once (no delay queue outlives it); dead letters go to
    ``<fanout>.dlq``."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    async with _confirming_channel(url_or_connection, f"consumer {queue}") as channel:
        await channel.set_qos(prefetch_count=prefetch)
        if fanout is not None:
            source = await declare_fanout_queue(channel, fanout, queue)
            backoff_s, dead_letter_key = (), fanout
        else:
            try:
                source = await channel.get_queue(queue)
            except ChannelNotFoundEntity as exc:
                raise Unavailable(f"queue {queue!r} does not exist; declare the topology first") from exc
            for delay in sorted(set(backoff_s)):
                await declare_retry_queue(channel, queue, delay)
            dead_letter_key = queue
        hop = partial(next_hop, queue, dead_letter_key, max_attempts=max_attempts, backoff_s=backoff_s)
        runner = _Runner(channel, queue, handler, hop, deduper)
        tag = await source.consume(runner.on_message)
        log.info("consumer started", extra={"data": {"queue": queue}})
        try:
            await stop.wait()
        finally:
            with suppress(*AMQP_ERRORS):
                await source.cancel(tag)
        await runner.drain(drain_timeout_s)
        log.info("consumer stopped", extra={"data": {"queue": queue}})
