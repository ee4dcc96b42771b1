"""asyncpg SQL → domain types. Every statement filters by tenant_id; None means "not there"."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import orjson

from coca_channel.models import Channel, ChannelType, OutboundAttempt, OutboundStatus

_INSERT_CHANNEL = """
INSERT INTO channels (tenant_id, type, agent_id, config, secret_encrypted, created_by)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
RETURNING id, tenant_id, type, agent_id, config, status, created_at, secret_encrypted
"""
_GET_CHANNEL = """
SELECT id, tenant_id, type, agent_id, config, status, created_at, secret_encrypted
FROM channels WHERE tenant_id = $1 AND id = $2 AND status = 'active'
"""
# Inbound requests are public: the channel id alone finds its tenant (and secret).
_FIND_CHANNEL = """
SELECT id, tenant_id, type, agent_id, config, status, created_at, secret_encrypted
FROM channels WHERE id = $1 AND status = 'active'
"""
_LIST_CHANNELS = """
SELECT id, tenant_id, type, agent_id, config, status, created_at, secret_encrypted
FROM channels WHERE tenant_id = $1 AND status = 'active' ORDER BY created_at DESC, id LIMIT $2
"""
_DELETE_CHANNEL = """
UPDATE channels SET status = 'deleted', deleted_at = now()
WHERE tenant_id = $1 AND id = $2 AND status = 'active' RETURNING id
"""

# The row of a provider message: inserted once; a redelivery finds the first one.
_INSERT_INBOUND = """
INSERT INTO inbound_messages (tenant_id, channel_id, external_id) VALUES ($1, $2, $3)
ON CONFLICT (channel_id, external_id) DO NOTHING RETURNING id, published_at
"""
_GET_INBOUND = """
SELECT id, published_at FROM inbound_messages WHERE tenant_id = $1 AND channel_id = $2 AND external_id = $3
"""
_MARK_PUBLISHED = """
UPDATE inbound_messages SET published_at = now() WHERE tenant_id = $1 AND id = $2 AND published_at IS NULL
"""

# Counts an attempt, unless the reply was already delivered or given up on.
_COUNT_ATTEMPT = """
INSERT INTO outbound_messages (tenant_id, channel_id, envelope_id, status, attempts)
VALUES ($1, $2, $3, 'pending', 1)
ON CONFLICT (envelope_id) DO UPDATE SET
    attempts = outbound_messages.attempts + 1, status = 'pending', updated_at = now()
    WHERE outbound_messages.status NOT IN ('delivered', 'dead')
RETURNING status, attempts
"""
_GET_OUTBOUND = "SELECT status, attempts FROM outbound_messages WHERE tenant_id = $1 AND envelope_id = $2"
_FINISH_ATTEMPT = """
UPDATE outbound_messages SET status = $3, last_error = $4, updated_at = now(),
    delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END
WHERE tenant_id = $1 AND envelope_id = $2
"""


def _channel(row: asyncpg.Record) -> Channel:
    values = dict(row)
    values["type"] = ChannelType(values["type"])
    values["config"] = orjson.loads(values["config"])
    return Channel(**values)


class ChannelRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(
        self,
        tenant_id: UUID,
        type_: ChannelType,
        agent_id: UUID,
        config: dict[str, Any],
        secret_encrypted: str,
        created_by: UUID | None,
    ) -> Channel:
        row = await self._conn.fetchrow(
            _INSERT_CHANNEL,
            tenant_id,
            type_.value,
            agent_id,
            orjson.dumps(config).decode(),
            secret_encrypted,
            created_by,
        )
        return _channel(row)

    async def get(self, tenant_id: UUID, channel_id: UUID) -> Channel | None:
        row = await self._conn.fetchrow(_GET_CHANNEL, tenant_id, channel_id)
        return _channel(row) if row else None

    async def find(self, channel_id: UUID) -> Channel | None:
        row = await self._conn.fetchrow(_FIND_CHANNEL, channel_id)
        return _channel(row) if row else None

    async def list(self, tenant_id: UUID, limit: int) -> list[Channel]:
        return [_channel(r) for r in await self._conn.fetch(_LIST_CHANNELS, tenant_id, limit)]

    async def delete(self, tenant_id: UUID, channel_id: UUID) -> bool:
        return await self._conn.fetchval(_DELETE_CHANNEL, tenant_id, channel_id) is not None


class MessageRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def record_inbound(
        self, tenant_id: UUID, channel_id: UUID, external_id: str
    ) -> tuple[UUID, bool, bool]:
        """``(id, new, published)`` of the row for this provider message (inserted if new)."""
        row = await self._conn.fetchrow(_INSERT_INBOUND, tenant_id, channel_id, external_id)
        new = row is not None
        if row is None:
            row = await self._conn.fetchrow(_GET_INBOUND, tenant_id, channel_id, external_id)
        return row["id"], new, row["published_at"] is not None

    async def mark_published(self, tenant_id: UUID, inbound_id: UUID) -> None:
        await self._conn.execute(_MARK_PUBLISHED, tenant_id, inbound_id)

    async def count_attempt(self, tenant_id: UUID, channel_id: UUID, envelope_id: str) -> OutboundAttempt:
        """Count one more attempt to send this reply. A delivered or dead reply is not counted again:
        its row is returned as it is."""
        row = await self._conn.fetchrow(_COUNT_ATTEMPT, tenant_id, channel_id, envelope_id)
        if row is None:
            row = await self._conn.fetchrow(_GET_OUTBOUND, tenant_id, envelope_id)
        return OutboundAttempt(OutboundStatus(row["status"]), row["attempts"])

    async def finish_attempt(
        self, tenant_id: UUID, envelope_id: str, status: OutboundStatus, error: str | None
    ) -> None:
        await self._conn.execute(_FINISH_ATTEMPT, tenant_id, envelope_id, status.value, error)
