"""Replies to webhook channels: the ``channel.outbound`` handler.

Each reply envelope has one ``outbound_messages`` row (its id is the key): every try counts an
attempt there before POSTing, signed with the channel's secret, to the channel's outbound URL
through the egress guard. 2xx → ``delivered`` (a redelivered envelope is then not sent again).
A retryable failure → ``failed`` and the error is raised, so the consumer runner retries it after
its backoff; on the last attempt (``OUTBOUND_MAX_ATTEMPTS``), or on a non-retryable failure, the
row becomes ``dead`` and the runner dead-letters the message into ``channel.outbound.dlq``.
"""

from __future__ import annotations

import logging
from uuid import UUID

import aiohttp
from coca_platform.crypto import SecretBox
from coca_platform.db import Pool
from coca_platform.egress import EgressPolicy
from coca_platform.envelope import Envelope
from coca_platform.errors import CocaError, InvalidArgument, NotFound
from pydantic import ValidationError

from coca_channel import sending, signatures
from coca_channel.events import MESSAGE_REPLY, ReplyData
from coca_channel.models import OutboundStatus
from coca_channel.repository import ChannelRepository, MessageRepository
from coca_channel.webhook import DELIVERY_HEADER, USER_AGENT, reply_body

log = logging.getLogger(__name__)


class OutboundDelivery:
    def __init__(
        self,
        pool: Pool,
        secrets: SecretBox,
        http: aiohttp.ClientSession,
        policy: EgressPolicy,
        *,
        max_attempts: int,
        timeout_s: float,
        max_response_bytes: int,
    ) -> None:
        self._pool, self._secrets, self._http, self._policy = pool, secrets, http, policy
        self._max_attempts, self._timeout_s, self._max_bytes = max_attempts, timeout_s, max_response_bytes

    async def handle(self, envelope: Envelope) -> None:
        tenant_id, reply = _parse(envelope)
        async with self._pool.acquire() as conn:
            channel = await ChannelRepository(conn).get(tenant_id, reply.channel_id)
            if channel is None or channel.outbound_url is None:
                raise NotFound(f"channel {reply.channel_id} does not exist (or has no outbound URL)")
            attempt = await MessageRepository(conn).count_attempt(tenant_id, channel.id, envelope.id)
        data = {"envelope_id": envelope.id, "channel_id": str(channel.id), "attempt": attempt.attempts}
        if attempt.status is OutboundStatus.DELIVERED:
            log.info("reply already delivered; skipped", extra={"data": data})
            return
        if attempt.status is OutboundStatus.DEAD:
            raise InvalidArgument("reply was already given up on", code="outbound_dead")
        body = reply_body(envelope, reply)
        headers = {
            **signatures.signed_headers(self._secrets.decrypt(channel.secret_encrypted), body),
            DELIVERY_HEADER: envelope.id,
            "User-Agent": USER_AGENT,
        }
        try:
            await sending.post(
                self._http,
                channel.outbound_url,
                body,
                headers,
                policy=self._policy,
                timeout_s=self._timeout_s,
                max_response_bytes=self._max_bytes,
            )
        except CocaError as exc:
            final = not exc.retryable or attempt.attempts >= self._max_attempts
            status = OutboundStatus.DEAD if final else OutboundStatus.FAILED
            await self._finish(tenant_id, envelope.id, status, f"{exc.code}: {exc.message}"[:500])
            log.warning("reply not delivered", extra={"data": {**data, "error": exc.code, "final": final}})
            raise
        await self._finish(tenant_id, envelope.id, OutboundStatus.DELIVERED, None)
        log.info("reply delivered", extra={"data": data})

    async def _finish(
        self, tenant_id: UUID, envelope_id: str, status: OutboundStatus, error: str | None
    ) -> None:
        async with self._pool.acquire() as conn:
            await MessageRepository(conn).finish_attempt(tenant_id, envelope_id, status, error)


def _parse(envelope: Envelope) -> tuple[UUID, ReplyData]:
    if envelope.type != MESSAGE_REPLY:
        raise InvalidArgument(f"unexpected message type {envelope.type!r}", code="unexpected_type")
    try:
        return UUID(envelope.tenant_id), ReplyData.model_validate(envelope.data)
    except (ValueError, ValidationError) as exc:  # pydantic's ValidationError is a ValueError too
        raise InvalidArgument(f"invalid reply: {exc}") from exc
