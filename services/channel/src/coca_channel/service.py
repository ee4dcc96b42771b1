"""Use-cases: channel bindings (create, list, get, delete) and taking in a provider's message."""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any
from uuid import UUID

import asyncpg
from coca_platform.crypto import SecretBox
from coca_platform.egress import EgressPolicy, check_url
from coca_platform.errors import Conflict, InvalidArgument, NotFound, Unavailable

from coca_channel import signatures
from coca_channel.events import ChannelEvents
from coca_channel.models import SUPPORTED_TYPES, Accepted, Channel, ChannelType
from coca_channel.replay import ReplayGuard
from coca_channel.repository import ChannelRepository, MessageRepository
from coca_channel.webhook import parse_inbound

log = logging.getLogger(__name__)

_MAX_URL_CHARS = 2048
_WEBHOOK_CONFIG_KEYS = frozenset({"outbound_url"})


def _channel_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("no such channel") from None


class ChannelService:
    def __init__(self, conn: asyncpg.Connection, secrets: SecretBox, policy: EgressPolicy) -> None:
        self._repo, self._secrets, self._policy = ChannelRepository(conn), secrets, policy

    async def create(
        self,
        tenant_id: UUID,
        user_id: UUID | None,
        type_: ChannelType,
        agent_id: UUID,
        config: dict[str, Any],
    ) -> tuple[Channel, str]:
        """The new channel and its signing secret (returned once; stored encrypted)."""
        if type_ not in SUPPORTED_TYPES:
            raise InvalidArgument(
                f"channel type {type_.value!r} not yet supported (supported: webhook)",
                code="channel_type_not_supported",
            )
        config = self._webhook_config(config)
        secret = signatures.new_signing_secret()
        channel = await self._repo.insert(
            tenant_id, type_, agent_id, config, self._secrets.encrypt(secret), user_id
        )
        log.info("channel created", extra={"data": {"channel_id": str(channel.id), "type": type_.value}})
        return channel, secret

    def _webhook_config(self, config: dict[str, Any]) -> dict[str, Any]:
        unknown = set(config) - _WEBHOOK_CONFIG_KEYS
        if unknown:
            raise InvalidArgument(f"config: unknown keys {sorted(unknown)} (webhook takes outbound_url)")
        url = config.get("outbound_url")
        if not isinstance(url, str) or not url.strip():
            raise InvalidArgument("config.outbound_url: required for a webhook channel")
        if len(url) > _MAX_URL_CHARS:
            raise InvalidArgument(f"config.outbound_url: longer than {_MAX_URL_CHARS} characters")
        check_url(url.strip(), self._policy)  # scheme, credentials, literal addresses; names at send time
        return {"outbound_url": url.strip()}

    async def list(self, tenant_id: UUID, limit: int) -> list[Channel]:
        return await self._repo.list(tenant_id, limit)

    async def get(self, tenant_id: UUID, channel_id: UUID) -> Channel:
        channel = await self._repo.get(tenant_id, channel_id)
        if channel is None:
            raise NotFound("no such channel")
        return channel

    async def delete(self, tenant_id: UUID, channel_id: UUID) -> None:
        if not await self._repo.delete(tenant_id, channel_id):
            raise NotFound("no such channel")
        log.info("channel deleted", extra={"data": {"channel_id": str(channel_id)}})


class InboundService:
    """A provider's signed request → one inbound row → one ``channel.message.received`` envelope.

    Order: channel (404) → signature and timestamp (401) → replay guard (409) → body (400/422) →
    row → publish. A failure after the replay claim releases it, so the sender may retry the same
    request. A redelivered provider message id is accepted (202) and not published again, unless
    its first publish never completed.
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        secrets: SecretBox,
        replay: ReplayGuard,
        events: ChannelEvents,
        *,
        tolerance_s: int,
        max_text_chars: int,
    ) -> None:
        self._channels, self._messages = ChannelRepository(conn), MessageRepository(conn)
        self._secrets, self._replay, self._events = secrets, replay, events
        self._tolerance_s, self._max_text_chars = tolerance_s, max_text_chars

    async def receive(
        self, raw_channel_id: str, timestamp: str | None, signature: str | None, body: bytes
    ) -> Accepted:
        channel = await self._channels.find(_channel_id(raw_channel_id))
        if channel is None:
            raise NotFound("no such channel")
        try:
            secret = self._secrets.decrypt(channel.secret_encrypted)
        except InvalidArgument as exc:  # our keys, not the caller's fault
            log.error("channel secret cannot be decrypted", extra={"data": {"channel_id": str(channel.id)}})
            raise Unavailable("channel is misconfigured; try again later") from exc
        matched = signatures.verify(secret, timestamp, signature, body, tolerance_s=self._tolerance_s)
        if not await self._replay.claim(channel.id, matched):
            raise Conflict("this signed request was already received", code="replayed_request")
        try:
            return await self._accept(channel, body)
        except BaseException:
            with suppress(Unavailable):  # the original error matters more
                await self._replay.release(channel.id, matched)
            raise

    async def _accept(self, channel: Channel, body: bytes) -> Accepted:
        message = parse_inbound(body, max_text_chars=self._max_text_chars)
        inbound_id, new, published = await self._messages.record_inbound(
            channel.tenant_id, channel.id, message.external_id
        )
        if not published:
            await self._events.message_received(channel, inbound_id, message)
            await self._messages.mark_published(channel.tenant_id, inbound_id)
        data = {"channel_id": str(channel.id), "inbound_id": str(inbound_id), "duplicate": not new}
        log.info("inbound message accepted", extra={"data": data})
        return Accepted(inbound_id, duplicate=not new)
