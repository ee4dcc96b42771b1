"""The agent's side of chat channels: consume ``channel.inbound.<type>``, run one agent turn per message,
publish the reply to ``channel.outbound`` (the channel service sends it to the provider).

In: ``channel.message.received`` ``{channel_id, agent_id, thread_id, sender, text, inbound_id,
message_id}`` (tenant in the envelope). Out: ``channel.message.reply`` ``{channel_id, thread_id,
text, in_reply_to}`` with ``in_reply_to`` the sender's message id (else the inbound id).

The agent turn is a callable the service provides, ``run_turn(tenant_id, agent_id, thread_key,
text) -> reply text``: it maps ``thread_key`` (stable per channel conversation, see ``thread_key``)
to a conversation, runs the agent without streaming and returns the final text ("" for no reply).
Its ``CocaError`` s keep their meaning: retryable ones (``Unavailable``) are retried with backoff,
the others (``NotFound`` agent, quota errors) dead-letter into ``channel.inbound.<type>.dlq``.

Delivery is at least once. The reply's envelope id is derived from the inbound envelope id, so a
retried message never sends its reply twice (the channel service keys outbound rows on it); a
``deduper`` (Redis ``SET NX`` on the envelope id) skips a second copy of a message before its turn.
A turn that ran but whose reply could not be published runs again on the retry.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack

from coca_platform import amqp
from coca_platform.envelope import Envelope
from coca_platform.errors import DeadlineExceeded, InvalidArgument
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

RunTurn = Callable[[str, str, str, str], Awaitable[str]]
"""``run_turn(tenant_id, agent_id, thread_key, text) -> reply text``."""

MESSAGE_RECEIVED = "channel.message.received"
MESSAGE_REPLY = "channel.message.reply"
INBOUND_QUEUE_PREFIX = "channel.inbound."
OUTBOUND_EXCHANGE = OUTBOUND_ROUTING_KEY = "channel.outbound"
SOURCE = "agent"

# Reply ids are uuid5(this, inbound envelope id): the same inbound message always gets the same reply id.
_REPLY_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5c7d-9e0f-1a2b3c4d5e6f")


class _Sender(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    name: str | None = None


class _Received(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    channel_id: uuid.UUID
    agent_id: uuid.UUID
    thread_id: str | None = Field(default=None, max_length=200)
    sender: _Sender | None = None
    text: str = Field(min_length=1)
    inbound_id: str
    message_id: str | None = None


def thread_key(channel_id: str, thread_id: str | None, sender_id: str | None) -> str:
    """Which conversation a channel message belongs to: its thread, else its sender's thread, else
    the channel's one shared thread. Stable, so ``run_turn`` can map it to one conversation."""
    if thread_id:
        return f"channel:{channel_id}:thread:{thread_id}"
    if sender_id:
        return f"channel:{channel_id}:sender:{sender_id}"
    return f"channel:{channel_id}"


def reply_id(inbound_envelope_id: str) -> str:
    return str(uuid.uuid5(_REPLY_NAMESPACE, inbound_envelope_id))


async def handle_inbound(envelope: Envelope, *, run_turn: RunTurn) -> Envelope | None:
    """Run the turn for one inbound channel message; the reply envelope, or None when there is no reply.
    An envelope that is not a well-formed ``channel.message.received`` raises ``InvalidArgument``."""
    if envelope.type != MESSAGE_RECEIVED:
        raise InvalidArgument(f"unexpected message type {envelope.type!r}", code="unexpected_type")
    try:
        message = _Received.model_validate(envelope.data)
    except ValidationError as exc:
        raise InvalidArgument(f"invalid channel message: {exc.error_count()} errors") from exc
    channel_id = str(message.channel_id)
    key = thread_key(channel_id, message.thread_id, message.sender.id if message.sender else None)
    text = await run_turn(envelope.tenant_id, str(message.agent_id), key, message.text)
    if not text.strip():
        return None
    return Envelope(
        id=reply_id(envelope.id),
        type=MESSAGE_REPLY,
        source=SOURCE,
        tenant_id=envelope.tenant_id,
        subject=channel_id,
        data={
            "channel_id": channel_id,
            "thread_id": message.thread_id,
            "text": text,
            "in_reply_to": message.message_id or message.inbound_id,
        },
    )


async def run_channel_worker(
    amqp_url: amqp.Connectable,
    *,
    run_turn: RunTurn,
    stop: asyncio.Event,
    deduper: amqp.Deduper | None = None,
    channel_types: Sequence[str] = ("webhook",),
    prefetch: int = 8,
    max_attempts: int = 4,
    backoff_s: tuple[float, ...] = amqp.DEFAULT_RETRY_DELAYS_S,
    turn_timeout_s: float = 300.0,
) -> None:
    """Consume ``channel.inbound.<type>`` for each of ``channel_types`` until ``stop`` is set (then drain
    and return). Up to ``prefetch`` turns run at once per queue; a turn longer than ``turn_timeout_s``
    fails as retryable. Declares the topology first (idempotent), so it may start before the channel
    service. Given a URL it opens (and closes) a connection of its own; given a connection, uses it."""
    async with AsyncExitStack() as stack:
        connection = amqp_url
        if isinstance(connection, str):
            connection = await amqp.open_connection(connection, name="coca-agent channel worker")
            stack.push_async_callback(connection.close)
        async with connection.channel() as channel:
            await amqp.declare_topology(channel)
        publisher = await stack.enter_async_context(amqp.open_publisher(connection, app_id="coca-agent"))

        async def handle(envelope: Envelope) -> None:
            try:
                async with asyncio.timeout(turn_timeout_s):
                    reply = await handle_inbound(envelope, run_turn=run_turn)
            except TimeoutError as exc:
                raise DeadlineExceeded(f"agent turn took longer than {turn_timeout_s} s") from exc
            data = {"id": envelope.id, "channel_id": envelope.subject, "replied": reply is not None}
            if reply is not None:
                await publisher.publish(OUTBOUND_EXCHANGE, OUTBOUND_ROUTING_KEY, reply)
            log.info("channel message answered", extra={"data": data})

        async with asyncio.TaskGroup() as group:
            for type_ in channel_types:
                group.create_task(
                    amqp.consume(
                        connection,
                        f"{INBOUND_QUEUE_PREFIX}{type_}",
                        handle,
                        stop=stop,
                        prefetch=prefetch,
                        max_attempts=max_attempts,
                        backoff_s=backoff_s,
                        deduper=deduper,
                    )
                )
