"""The event envelope shared by Kafka and RabbitMQ messages (and SSE / WebSocket frames).

Fields: ``id`` (UUID, the dedupe key), ``type``, ``version``, ``source`` (service), ``time``
(RFC 3339), ``tenant_id``, ``subject`` (conversation/document/... id), ``data``; plus ``seq``, an
optional per-subject sequence number (an extension attribute) that orders and resumes streams.
W3C ``traceparent`` travels in message headers, not in the envelope.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str
    version: int = 1
    source: str
    time: str = Field(default_factory=_now)
    tenant_id: str
    subject: str
    seq: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_none=True))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        return cls.model_validate(orjson.loads(raw))


def new_envelope(
    type_: str,
    *,
    source: str,
    tenant_id: str,
    subject: str,
    data: dict[str, Any] | None = None,
    seq: int | None = None,
) -> Envelope:
    return Envelope(type=type_, source=source, tenant_id=tenant_id, subject=subject, data=data or {}, seq=seq)
