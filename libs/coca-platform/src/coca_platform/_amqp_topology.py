"""The RabbitMQ topology as data, the functions that declare it, and where failed messages go.

Exchanges → queues (from the architecture brief)::

    channel.inbound   topic   → channel.inbound.{webhook,telegram,slack,feishu,email}  key "{type}.#"
    channel.outbound  direct  → channel.outbound                                      key "channel.outbound"
    notification      topic   → notification.email key "email.#", notification.push key "push.#" (TTL 1 day)
    document          direct  → document.index                                        key "index"
    plugin            fanout  → plugin.event.<instance>  (exclusive, one per consuming process)

Topic keys: publish with ``{type}`` or ``{type}.<anything>`` (``slack.<tenant_id>``); ``slack.#``
matches both. Every work queue is a quorum queue with ``x-delivery-limit`` that dead-letters
(at-least-once) to the ``dlx`` direct exchange, keyed by its own name, into ``<queue>.dlq``.

- **Retry with backoff**: the consumer republishes a failed message (``x-coca-attempt`` + 1) to the
  delay queue ``<queue>.retry.<ms>ms`` (quorum, ``x-message-ttl``), which dead-letters it back to
  the work queue through the default exchange once the delay has passed; then it acks the original.
  One delay queue per delay keeps each FIFO, so a long delay never holds up a short one.
- **Dead-letter**: after ``max_attempts``, on a non-retryable error or an invalid envelope, the
  consumer publishes to ``dlx`` with the reason in ``x-coca-*`` headers, then acks.
- **Backstop**: the broker dead-letters a message returned ``x-delivery-limit`` times (a consumer
  crash loop) and expired notifications (``x-death`` says why). RabbitMQ 3.10 also counts returns on
  channel close, so the limit (10) is well above the handler retries, which ``x-coca-attempt`` counts
  exactly: the brief's "3 retries then DLQ" is the consumer's ``max_attempts=4``.

Declaring is idempotent; arguments cannot change in place (``PRECONDITION_FAILED``): a change
means a new queue name, or deleting the old queue.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

from aio_pika import Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, DeliveryMode
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

log = logging.getLogger("coca_platform.amqp")

DLX = "dlx"
DAY_MS = 24 * 3600 * 1000
DEFAULT_DELIVERY_LIMIT = 10
DEFAULT_RETRY_DELAYS_S: tuple[float, ...] = (1.0, 5.0, 30.0)
CHANNEL_TYPES = ("webhook", "telegram", "slack", "feishu", "email")

ExchangeKind = Literal["direct", "topic", "fanout"]


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    kind: ExchangeKind


@dataclass(frozen=True)
class BindingSpec:
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class QueueSpec:
    """A durable work queue with its dead-letter queue and delay queues."""

    name: str
    bindings: tuple[BindingSpec, ...]
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    message_ttl_ms: int | None = None
    retry_delays_s: tuple[float, ...] = DEFAULT_RETRY_DELAYS_S

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def retry_queues(self) -> tuple[str, ...]:
        return tuple(retry_queue_name(self.name, d) for d in self.retry_delays_s)

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": DLX,
            "x-dead-letter-routing-key": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",  # required by at-least-once dead-lettering
        }
        if self.message_ttl_ms is not None:
            args["x-message-ttl"] = self.message_ttl_ms
        return args


@dataclass(frozen=True)
class FanoutSpec:
    """A fanout exchange whose consumers each bind an exclusive ``<queue_prefix><instance>`` queue.
    Their dead letters go to ``<exchange>.dlq`` (routing key ``<exchange>`` on ``dlx``)."""

    exchange: str
    queue_prefix: str

    @property
    def dlq(self) -> str:
        return f"{self.exchange}.dlq"


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    fanouts: tuple[FanoutSpec, ...]

    def queue(self, name: str) -> QueueSpec:
        return next(q for q in self.queues if q.name == name)


def retry_queue_name(queue: str, delay_s: float) -> str:
    return f"{queue}.retry.{round(delay_s * 1000)}ms"


TOPOLOGY = Topology(
    exchanges=(
        ExchangeSpec(DLX, "direct"),
        ExchangeSpec("channel.inbound", "topic"),
        ExchangeSpec("channel.outbound", "direct"),
        ExchangeSpec("notification", "topic"),
        ExchangeSpec("document", "direct"),
        ExchangeSpec("plugin", "fanout"),
    ),
    queues=(
        *(
            QueueSpec(f"channel.inbound.{t}", (BindingSpec("channel.inbound", f"{t}.#"),))
            for t in CHANNEL_TYPES
        ),
        QueueSpec("channel.outbound", (BindingSpec("channel.outbound", "channel.outbound"),)),
        QueueSpec("notification.email", (BindingSpec("notification", "email.#"),), message_ttl_ms=DAY_MS),
        QueueSpec("notification.push", (BindingSpec("notification", "push.#"),), message_ttl_ms=DAY_MS),
        QueueSpec("document.index", (BindingSpec("document", "index"),)),
    ),
    fanouts=(FanoutSpec("plugin", "plugin.event."),),
)


async def declare_exchange(channel: AbstractChannel, spec: ExchangeSpec) -> None:
    await channel.declare_exchange(spec.name, spec.kind, durable=True)


async def declare_dlq(channel: AbstractChannel, name: str, routing_key: str) -> None:
    dlq = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
    await dlq.bind(DLX, routing_key)


async def declare_retry_queue(channel: AbstractChannel, queue: str, delay_s: float) -> str:
    """``<queue>.retry.<ms>ms``: holds a message ``delay_s`` then sends it back to ``queue``."""
    name = retry_queue_name(queue, delay_s)
    await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": round(delay_s * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    return name


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> None:
    """The work queue, its bindings, its DLQ and its delay queues. Exchanges must exist."""
    await declare_dlq(channel, spec.dlq, spec.name)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments())
    for binding in spec.bindings:
        await queue.bind(binding.exchange, binding.routing_key)
    for delay in spec.retry_delays_s:
        await declare_retry_queue(channel, spec.name, delay)


async def declare_topology(channel: AbstractChannel, topology: Topology = TOPOLOGY) -> None:
    """Declare every exchange and queue of ``topology`` (the brief's by default). Idempotent:
    services call it at startup and the local infra runner once."""
    await declare_exchange(channel, ExchangeSpec(DLX, "direct"))
    for exchange in topology.exchanges:
        await declare_exchange(channel, exchange)
    for spec in topology.queues:
        await declare_queue(channel, spec)
    for fanout in topology.fanouts:
        await declare_dlq(channel, fanout.dlq, fanout.exchange)


async def declare_fanout_queue(channel: AbstractChannel, exchange: str, name: str) -> AbstractQueue:
    """An exclusive, auto-delete queue ``name`` bound to the fanout ``exchange``: one per consuming
    process (``plugin.event.<instance>``). It lives as long as the connection of ``channel``; a robust
    channel declares it again after a reconnect. Dead letters go to ``<exchange>.dlq``. Events
    published while it does not exist are not seen: caches that listen here also expire entries."""
    fanout = FanoutSpec(exchange, "")
    await declare_exchange(channel, ExchangeSpec(DLX, "direct"))
    await declare_exchange(channel, ExchangeSpec(exchange, "fanout"))
    await declare_dlq(channel, fanout.dlq, exchange)
    queue = await channel.declare_queue(
        name,
        exclusive=True,
        auto_delete=True,
        arguments={"x-dead-letter-exchange": DLX, "x-dead-letter-routing-key": exchange},
    )
    await queue.bind(exchange, "")
    return queue


# --- where a failed message goes: attempt and reason headers, the next hop -----------------------

ATTEMPT = "x-coca-attempt"  # absent (= 1) on first publish; +1 on each retry republish
REASON = "x-coca-dead-letter-reason"  # invalid_envelope | non_retryable | max_attempts
ERROR_CODE = "x-coca-error-code"  # the CocaError code, "internal" or "invalid_envelope"
ERROR = "x-coca-error"  # "<code>: <message>", truncated
SOURCE_QUEUE = "x-coca-queue"
AMQP_ERRORS = (AMQPError, ChannelInvalidStateError, OSError)  # OSError covers timeouts and sockets
Hop = tuple[str, str, dict[str, Any]]  # exchange, routing key, headers to add


def attempt_of(headers: Mapping[str, Any]) -> int:
    value = headers.get(ATTEMPT)
    return value if isinstance(value, int) and value >= 1 else 1


def next_hop(
    queue: str, dead_letter_key: str, attempt: int, *, reason: str | None, max_attempts: int,
    backoff_s: tuple[float, ...],
) -> Hop:  # fmt: skip
    """The DLQ if ``reason`` is given or this was the ``max_attempts``-th try; else the delay queue
    for ``backoff_s[attempt - 1]`` (the last value repeats; the queue itself when empty)."""
    if reason is None and attempt < max_attempts:
        delay = backoff_s[min(attempt, len(backoff_s)) - 1] if backoff_s else 0.0
        return "", retry_queue_name(queue, delay) if delay else queue, {ATTEMPT: attempt + 1}
    return DLX, dead_letter_key, {ATTEMPT: attempt, REASON: reason or "max_attempts", SOURCE_QUEUE: queue}


async def move(
    channel: AbstractChannel, message: AbstractIncomingMessage, hop: Hop, code: str, detail: str
) -> None:
    """Publish a persistent copy of ``message`` to ``hop`` (confirmed), then ack the original; if the
    copy is not confirmed, the original goes back to its queue (``x-delivery-limit`` bounds that)."""
    exchange, key, added = hop
    kept = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
    copy = Message(
        message.body,
        headers={**kept, **added, ERROR_CODE: code, ERROR: detail[:500]},
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message.message_id or str(uuid.uuid4()),  # an unroutable copy is matched by it
        correlation_id=message.correlation_id,
        type=message.type,
        app_id=message.app_id,
        timestamp=message.timestamp,
        reply_to=message.reply_to,
    )
    data = {"message_id": message.message_id, "to": key, "code": code, **added}
    try:
        target = (
            channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(copy, key, mandatory=True, timeout=10)
    except AMQP_ERRORS as exc:
        log.warning(
            "could not move message; it goes back to its queue", extra={"data": {**data, "error": repr(exc)}}
        )
        with suppress(*AMQP_ERRORS):
            await message.nack(requeue=True)
        return
    with suppress(*AMQP_ERRORS):  # if the ack is lost, the broker delivers the original again
        await message.ack()
    if exchange == DLX:
        log.error("message dead-lettered", extra={"data": data})
    else:
        log.warning("message handling failed; retry scheduled", extra={"data": data})
