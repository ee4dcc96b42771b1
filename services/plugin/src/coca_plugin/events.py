"""``plugin`` fanout events (``plugin.installed`` / ``plugin.updated`` / ``plugin.removed``): published
after each change is committed, consumed by every replica to drop its cached copy.

Envelope: ``tenant_id``, ``subject`` (the plugin id), ``data`` ``{plugin_id, name, version,
tool_ids}``. A change whose event cannot be published stays committed (the caller gets its answer);
other replicas then see it when their cache entry expires (``TOOL_CACHE_TTL_S``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from coca_platform.amqp import Publisher
from coca_platform.envelope import Envelope, new_envelope
from coca_platform.errors import Unavailable

from coca_plugin.catalog import ToolCatalog
from coca_plugin.models import Plugin, PluginEventType, tool_id

log = logging.getLogger(__name__)

EXCHANGE = "plugin"
SOURCE = "plugin"
_TYPES = frozenset(t.value for t in PluginEventType)


@dataclass(frozen=True, slots=True)
class PluginEvents:
    publisher: Publisher

    async def published(self, type_: PluginEventType, plugin: Plugin) -> None:
        envelope = new_envelope(
            type_.value,
            source=SOURCE,
            tenant_id=str(plugin.tenant_id),
            subject=str(plugin.id),
            data={
                "plugin_id": str(plugin.id),
                "name": plugin.name,
                "version": plugin.version,
                "tool_ids": [tool_id(plugin.name, t.name) for t in plugin.tools],
            },
        )
        try:
            await self.publisher.publish(EXCHANGE, "", envelope)
        except Unavailable as exc:
            data = {"event_id": envelope.id, "type": envelope.type, "plugin_id": str(plugin.id)}
            log.warning(
                "plugin event not published; other replicas see the change when their cache expires",
                extra={"data": data | {"error": exc.message}},
            )


def fanout_queue_name(instance: str) -> str:
    return f"{EXCHANGE}.event.{instance}"


def new_instance_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True)
class InvalidationHandler:
    """Drops the cached plugin an event names. Idempotent: a repeat drops nothing more."""

    catalog: ToolCatalog

    async def __call__(self, envelope: Envelope) -> None:
        if envelope.type not in _TYPES:
            return
        name = envelope.data.get("name")
        try:
            tenant_id = uuid.UUID(envelope.tenant_id)
        except ValueError:
            tenant_id = None
        if tenant_id is None or not isinstance(name, str):
            log.warning("plugin event without tenant or name ignored", extra={"data": {"id": envelope.id}})
            return
        self.catalog.invalidate(tenant_id, name)
        log.debug("plugin cache entry dropped", extra={"data": {"id": envelope.id, "name": name}})
