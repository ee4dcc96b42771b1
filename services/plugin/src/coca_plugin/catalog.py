"""This process's cache of plugins with compiled parameter validators, keyed by tenant and plugin name.

Reads go through it (tool resolution and invocation for agents are on the hot path). Every replica
drops an entry when a ``plugin`` fanout event about it arrives (``invalidate``); entries also expire
after ``ttl_s``, which bounds staleness should an event be missed. A read that raced with an
invalidation is served but not cached, so it cannot put back what was just dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from uuid import UUID

from coca_platform.db import Pool
from jsonschema.protocols import Validator

from coca_plugin.models import Plugin, ToolSpec, split_tool_id
from coca_plugin.repository import PluginRepository
from coca_plugin.schemas import compile_schema


@dataclass(frozen=True, slots=True)
class LoadedTool:
    spec: ToolSpec
    validator: Validator


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    plugin: Plugin
    tools: Mapping[str, LoadedTool]


def load(plugin: Plugin) -> LoadedPlugin:
    return LoadedPlugin(plugin, {t.name: LoadedTool(t, compile_schema(t.parameters)) for t in plugin.tools})


class ToolCatalog:
    def __init__(
        self, pool: Pool, *, ttl_s: float, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pool, self._ttl_s, self._size, self._clock = pool, ttl_s, size, clock
        self._entries: OrderedDict[tuple[UUID, str], tuple[float, LoadedPlugin]] = OrderedDict()
        self._invalidations = 0

    def invalidate(self, tenant_id: UUID, name: str) -> None:
        self._invalidations += 1
        self._entries.pop((tenant_id, name), None)

    async def plugins(self, tenant_id: UUID, names: Iterable[str]) -> dict[str, LoadedPlugin]:
        """The tenant's plugins among ``names`` (those that exist), from the cache or PostgreSQL."""
        now, found, missing = self._clock(), {}, []
        for name in dict.fromkeys(names):
            entry = self._entries.get((tenant_id, name))
            if entry is not None and entry[0] > now:
                self._entries.move_to_end((tenant_id, name))
                found[name] = entry[1]
            else:
                missing.append(name)
        if missing:
            seen = self._invalidations
            async with self._pool.acquire() as conn:
                loaded = [load(p) for p in await PluginRepository(conn).by_names(tenant_id, missing)]
            for item in loaded:
                found[item.plugin.name] = item
                if seen == self._invalidations and self._ttl_s > 0:
                    self._store(tenant_id, item, now + self._ttl_s)
        return found

    async def tool(self, tenant_id: UUID, tool_id: str) -> tuple[LoadedPlugin, LoadedTool] | None:
        parts = split_tool_id(tool_id)
        if parts is None:
            return None
        plugin = (await self.plugins(tenant_id, [parts[0]])).get(parts[0])
        tool = plugin.tools.get(parts[1]) if plugin else None
        return (plugin, tool) if plugin and tool else None

    def _store(self, tenant_id: UUID, item: LoadedPlugin, expires: float) -> None:
        self._entries[(tenant_id, item.plugin.name)] = (expires, item)
        self._entries.move_to_end((tenant_id, item.plugin.name))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
