"""The ``webhook`` channel's wire format, in and out.

In (``POST /v1/channels/{id}/inbound``, signed, see ``signatures``)::

    {"id": "<sender's message id>", "text": "...", "sender": {"id", "name"?}?, "thread_id": "..."?}

Out (``POST <outbound_url>``, signed the same way with the channel's secret; ``X-Coca-Delivery-Id``
is the reply's id, the same on every retry, so a receiver can drop duplicates)::

    {"id", "type": "message.reply", "channel_id", "thread_id", "text", "in_reply_to", "time"}
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from coca_platform.envelope import Envelope
from coca_platform.errors import BadRequest, InvalidArgument
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from coca_channel.events import ReplyData
from coca_channel.models import InboundMessage, Sender

DELIVERY_HEADER = "X-Coca-Delivery-Id"
USER_AGENT = "Coca-Webhooks/1"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Id = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_no_nul)
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_no_nul)]


class _SenderIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Id
    name: Name | None = None


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Id
    text: Annotated[str, StringConstraints(min_length=1), AfterValidator(_no_nul)]
    sender: _SenderIn | None = None
    thread_id: Id | None = None


def parse_inbound(body: bytes, *, max_text_chars: int) -> InboundMessage:
    """The message in a verified request body; ``BadRequest`` (not JSON) or ``InvalidArgument``."""
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("request body is not valid JSON") from exc
    try:
        message = _MessageIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidArgument(f"{where}: {first['msg']}") from exc
    if len(message.text) > max_text_chars:
        raise InvalidArgument(f"text: longer than {max_text_chars} characters", code="text_too_long")
    sender = None if message.sender is None else Sender(message.sender.id, message.sender.name)
    return InboundMessage(message.id, message.text, sender, message.thread_id)


def reply_body(envelope: Envelope, reply: ReplyData) -> bytes:
    """The JSON POSTed to the outbound URL for a reply envelope."""
    return orjson.dumps(
        {
            "id": envelope.id,
            "type": "message.reply",
            "channel_id": str(reply.channel_id),
            "thread_id": reply.thread_id,
            "text": reply.text,
            "in_reply_to": reply.in_reply_to,
            "time": envelope.time,
        }
    )
