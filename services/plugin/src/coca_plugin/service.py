"""Use-cases of the plugin registry: register, list, read, change and remove a tenant's plugins.

Each change commits, drops this process's cached copy, then publishes its ``plugin`` event (so the
other replicas drop theirs). Endpoint URLs are checked against the egress policy here (scheme, no
credentials, no refused literal address); names that resolve to refused addresses are refused when
called (``coca_platform.egress``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from coca_platform.crypto import SecretBox
from coca_platform.db import Pool
from coca_platform.egress import EgressPolicy, check_url
from coca_platform.errors import InvalidArgument, NotFound, QuotaExceeded

from coca_plugin.catalog import ToolCatalog
from coca_plugin.events import PluginEvents
from coca_plugin.models import Plugin, PluginChanges, PluginDraft, PluginEventType, ToolSpec
from coca_plugin.repository import PluginRepository
from coca_plugin.schemas import check_parameters_schema

log = logging.getLogger(__name__)

_LOG_MESSAGES = {
    PluginEventType.INSTALLED: "plugin installed",
    PluginEventType.UPDATED: "plugin updated",
    PluginEventType.REMOVED: "plugin removed",
}


@dataclass(frozen=True, slots=True)
class RegistryLimits:
    max_tools: int
    max_schema_bytes: int
    plugins_per_tenant: int


class PluginRegistry:
    def __init__(
        self,
        pool: Pool,
        *,
        box: SecretBox,
        policy: EgressPolicy,
        catalog: ToolCatalog,
        events: PluginEvents,
        limits: RegistryLimits,
    ) -> None:
        self._pool, self._box, self._policy = pool, box, policy
        self._catalog, self._events, self._limits = catalog, events, limits

    def _check_tools(self, tools: tuple[ToolSpec, ...]) -> None:
        if not tools:
            raise InvalidArgument("a plugin needs at least one tool")
        if len(tools) > self._limits.max_tools:
            raise InvalidArgument(f"a plugin has at most {self._limits.max_tools} tools")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise InvalidArgument("tool names must be unique within a plugin")
        for tool in tools:
            check_parameters_schema(tool.name, tool.parameters, max_bytes=self._limits.max_schema_bytes)
            check_url(tool.endpoint_url, self._policy)

    async def register(self, tenant_id: UUID, created_by: str, draft: PluginDraft) -> Plugin:
        self._check_tools(draft.tools)
        ciphertext = self._box.encrypt(draft.secret) if draft.secret is not None else None
        async with self._pool.acquire() as conn, conn.transaction():
            repo = PluginRepository(conn)
            await repo.lock_tenant(tenant_id)
            if await repo.count(tenant_id) >= self._limits.plugins_per_tenant:
                raise QuotaExceeded(
                    f"a tenant has at most {self._limits.plugins_per_tenant} plugins", code="too_many_plugins"
                )
            plugin = await repo.insert(
                tenant_id, draft.name, draft.description, draft.tools, ciphertext, created_by
            )
        await self._changed(PluginEventType.INSTALLED, plugin)
        return plugin

    async def page(self, tenant_id: UUID, *, after: str = "", limit: int = 100) -> list[Plugin]:
        async with self._pool.acquire() as conn:
            return await PluginRepository(conn).page(tenant_id, after=after, limit=limit)

    async def get(self, tenant_id: UUID, plugin_id: UUID) -> Plugin:
        async with self._pool.acquire() as conn:
            plugin = await PluginRepository(conn).get(tenant_id, plugin_id)
        if plugin is None:
            raise NotFound(f"plugin {str(plugin_id)!r} not found")
        return plugin

    async def update(self, tenant_id: UUID, plugin_id: UUID, changes: PluginChanges) -> Plugin:
        if changes.tools is not None:
            self._check_tools(changes.tools)
        new_secret = self._box.encrypt(changes.secret) if changes.secret is not None else None
        async with self._pool.acquire() as conn, conn.transaction():
            repo = PluginRepository(conn)
            current = await repo.get(tenant_id, plugin_id, for_update=True)
            if current is None:
                raise NotFound(f"plugin {str(plugin_id)!r} not found")
            secret = None if changes.clear_secret else (new_secret or current.secret_ciphertext)
            plugin = await repo.update(
                tenant_id,
                plugin_id,
                changes.description if changes.description is not None else current.description,
                changes.tools if changes.tools is not None else current.tools,
                secret,
            )
        assert plugin is not None  # the row is locked
        await self._changed(PluginEventType.UPDATED, plugin)
        return plugin

    async def delete(self, tenant_id: UUID, plugin_id: UUID) -> None:
        async with self._pool.acquire() as conn:
            plugin = await PluginRepository(conn).delete(tenant_id, plugin_id)
        if plugin is None:
            raise NotFound(f"plugin {str(plugin_id)!r} not found")
        await self._changed(PluginEventType.REMOVED, plugin)

    async def _changed(self, type_: PluginEventType, plugin: Plugin) -> None:
        self._catalog.invalidate(plugin.tenant_id, plugin.name)
        data = {"tenant_id": str(plugin.tenant_id), "plugin_id": str(plugin.id), "version": plugin.version}
        log.info(_LOG_MESSAGES[type_], extra={"data": data})
        await self._events.published(type_, plugin)
