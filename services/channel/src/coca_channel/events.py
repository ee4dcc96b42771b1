"""Messages the channel service publishes and consumes: names, payload models, publish helpers.

- ``channel.inbound`` (topic), routing key = channel type: ``channel.message.received``
  ``{channel_id, agent_id, thread_id, sender, text, inbound_id, message_id}`` (``message_id``: the
  sender's own id of the message); the envelope id is the inbound
  row id, so a re-publish (after a crash before ``published_at`` was set) dedupes downstream.
- ``channel.outbound`` (direct), key ``channel.outbound``: ``channel.message.reply``
  ``{channel_id, thread_id, text, in_reply_to}`` from the agent; sent to the channel's outbound URL.
- ``notification`` (topic), keys ``email`` / ``push``: ``notification.requested`` with
  ``{to, subject, body}`` / ``{url, payload}``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from uuid import UUID

from coca_platform.amqp import Publisher
from coca_platform.envelope import Envelope, new_envelope
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from coca_channel.models import Channel, InboundMessage

SOURCE = "channel"
INBOUND_EXCHANGE = "channel.inbound"
OUTBOUND_EXCHANGE = OUTBOUND_QUEUE = OUTBOUND_ROUTING_KEY = "channel.outbound"
NOTIFICATION_EXCHANGE = "notification"
EMAIL_QUEUE, PUSH_QUEUE = "notification.email", "notification.push"

MESSAGE_RECEIVED = "channel.message.received"
MESSAGE_REPLY = "channel.message.reply"
NOTIFICATION_REQUESTED = "notification.requested"

NotificationKind = Literal["email", "push"]

# One address; no header injection (CR/LF) possible. Delivery is the SMTP server's business.
_ADDRESS_RE = re.compile(r"^[^@\s<>,;\x00-\x1f\x7f]{1,64}@[^@\s<>,;\x00-\x1f\x7f]{1,253}$")


def _address(value: str) -> str:
    if not _ADDRESS_RE.match(value):
        raise ValueError("not a valid email address")
    return value


def _one_line(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("must be a single line")
    return value


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#@]+([/?#]\S*)?$", value, re.IGNORECASE):
        raise ValueError("must be an http or https URL without credentials")
    return value


Address = Annotated[str, StringConstraints(strip_whitespace=True, max_length=320), AfterValidator(_address)]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=998), AfterValidator(_one_line)]
HttpUrl = Annotated[str, StringConstraints(min_length=8, max_length=2048), AfterValidator(_http_url)]


class ReplyData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    channel_id: UUID
    thread_id: str | None = None
    text: str = Field(max_length=100_000)
    in_reply_to: str | None = None


class EmailData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    to: Address
    subject: Subject
    body: str = Field(max_length=1_000_000)


class PushData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: HttpUrl
    payload: dict[str, Any] = Field(default_factory=dict)


class ChannelEvents:
    """Publishes the channel service's envelopes (confirmed by the broker before returning)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def message_received(self, channel: Channel, inbound_id: UUID, message: InboundMessage) -> None:
        sender = None if message.sender is None else {"id": message.sender.id, "name": message.sender.name}
        data = {
            "channel_id": str(channel.id),
            "agent_id": str(channel.agent_id),
            "thread_id": message.thread_id,
            "sender": sender,
            "text": message.text,
            "inbound_id": str(inbound_id),
            "message_id": message.external_id,
        }
        envelope = Envelope(
            id=str(inbound_id),
            type=MESSAGE_RECEIVED,
            source=SOURCE,
            tenant_id=str(channel.tenant_id),
            subject=str(channel.id),
            data=data,
        )
        await self._publisher.publish(INBOUND_EXCHANGE, channel.type.value, envelope)

    async def notification_requested(
        self, kind: NotificationKind, tenant_id: str, data: EmailData | PushData
    ) -> str:
        envelope = new_envelope(
            NOTIFICATION_REQUESTED, source=SOURCE, tenant_id=tenant_id, subject=kind, data=data.model_dump()
        )
        await self._publisher.publish(NOTIFICATION_EXCHANGE, kind, envelope)
        return envelope.id
