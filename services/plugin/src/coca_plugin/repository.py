"""PostgreSQL access for plugins (schema ``coca_plugin``). Every query filters by tenant."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import orjson
from coca_platform.errors import AlreadyExists

from coca_plugin.models import Plugin, ToolSpec

_INSERT = """
INSERT INTO plugins (tenant_id, name, description, tools, secret_ciphertext, created_by)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
RETURNING id, tenant_id, name, description, tools, secret_ciphertext, version, created_at, updated_at
"""
_LOCK_TENANT = "SELECT pg_advisory_xact_lock(hashtext('coca-plugin:' || $1::text))"
_COUNT = "SELECT count(*) FROM plugins WHERE tenant_id = $1"
_LIST = """
SELECT id, tenant_id, name, description, tools, secret_ciphertext, version, created_at, updated_at
FROM plugins WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3
"""
_GET = """
SELECT id, tenant_id, name, description, tools, secret_ciphertext, version, created_at, updated_at
FROM plugins WHERE tenant_id = $1 AND id = $2
"""
_GET_FOR_UPDATE = _GET + " FOR UPDATE"
_GET_BY_NAMES = """
SELECT id, tenant_id, name, description, tools, secret_ciphertext, version, created_at, updated_at
FROM plugins WHERE tenant_id = $1 AND name = ANY($2::text[])
"""
_UPDATE = """
UPDATE plugins SET description = $3, tools = $4::jsonb, secret_ciphertext = $5,
    version = version + 1, updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING id, tenant_id, name, description, tools, secret_ciphertext, version, created_at, updated_at
"""
_DELETE = """
DELETE FROM plugins WHERE tenant_id = $1 AND id = $2
RETURNING id, tenant_id, name, description, tools, secret_ciphertext, version, created_at, updated_at
"""


def _tools_json(tools: tuple[ToolSpec, ...]) -> str:
    return orjson.dumps([t.to_json() for t in tools]).decode()


def _plugin(row: Any) -> Plugin:
    return Plugin(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        description=row["description"],
        tools=tuple(ToolSpec.from_json(t) for t in orjson.loads(row["tools"])),
        secret_ciphertext=row["secret_ciphertext"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PluginRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock_tenant(self, tenant_id: UUID) -> None:
        """Serialise registrations of one tenant (for its plugin count) until the transaction ends."""
        await self._conn.execute(_LOCK_TENANT, str(tenant_id))

    async def count(self, tenant_id: UUID) -> int:
        return int(await self._conn.fetchval(_COUNT, tenant_id))

    async def insert(
        self,
        tenant_id: UUID,
        name: str,
        description: str,
        tools: tuple[ToolSpec, ...],
        secret_ciphertext: str | None,
        created_by: str,
    ) -> Plugin:
        try:
            row = await self._conn.fetchrow(
                _INSERT, tenant_id, name, description, _tools_json(tools), secret_ciphertext, created_by
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(f"a plugin named {name!r} already exists") from exc
        return _plugin(row)

    async def page(self, tenant_id: UUID, *, after: str, limit: int) -> list[Plugin]:
        return [_plugin(r) for r in await self._conn.fetch(_LIST, tenant_id, after, limit)]

    async def get(self, tenant_id: UUID, plugin_id: UUID, *, for_update: bool = False) -> Plugin | None:
        row = await self._conn.fetchrow(_GET_FOR_UPDATE if for_update else _GET, tenant_id, plugin_id)
        return _plugin(row) if row else None

    async def by_names(self, tenant_id: UUID, names: list[str]) -> list[Plugin]:
        return [_plugin(r) for r in await self._conn.fetch(_GET_BY_NAMES, tenant_id, names)]

    async def update(
        self,
        tenant_id: UUID,
        plugin_id: UUID,
        description: str,
        tools: tuple[ToolSpec, ...],
        secret_ciphertext: str | None,
    ) -> Plugin | None:
        row = await self._conn.fetchrow(
            _UPDATE, tenant_id, plugin_id, description, _tools_json(tools), secret_ciphertext
        )
        return _plugin(row) if row else None

    async def delete(self, tenant_id: UUID, plugin_id: UUID) -> Plugin | None:
        row = await self._conn.fetchrow(_DELETE, tenant_id, plugin_id)
        return _plugin(row) if row else None
