"""Domain types of the channel service. No I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


class ChannelType(enum.StrEnum):
    WEBHOOK = "webhook"
    TELEGRAM = "telegram"
    SLACK = "slack"
    FEISHU = "feishu"
    EMAIL = "email"


#: Types with an implementation. The others are part of the public API's vocabulary and are refused
#: with 422 ``channel_type_not_supported`` until their provider adapter exists.
SUPPORTED_TYPES = frozenset({ChannelType.WEBHOOK})


class OutboundStatus(enum.StrEnum):
    PENDING = "pending"  # recorded, being sent
    DELIVERED = "delivered"
    FAILED = "failed"  # the last attempt failed; a retry is scheduled
    DEAD = "dead"  # given up: dead-lettered


@dataclass(frozen=True, slots=True)
class Channel:
    id: UUID
    tenant_id: UUID
    type: ChannelType
    agent_id: UUID
    config: dict[str, Any]
    status: str
    created_at: datetime
    secret_encrypted: str = field(repr=False)

    @property
    def outbound_url(self) -> str | None:
        url = self.config.get("outbound_url")
        return url if isinstance(url, str) else None


@dataclass(frozen=True, slots=True)
class Sender:
    id: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """What a provider sent, after its signature was verified."""

    external_id: str  # the provider's message id: the dedupe key per channel
    text: str
    sender: Sender | None = None
    thread_id: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """An inbound message taken in: ``id`` is the inbound row (and published envelope) id."""

    id: UUID
    duplicate: bool


@dataclass(frozen=True, slots=True)
class OutboundAttempt:
    """The outbound row after an attempt was counted."""

    status: OutboundStatus
    attempts: int
