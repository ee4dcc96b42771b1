"""What the plugin service holds while it runs, opened and closed by the lifespan in ``app.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aio_pika.abc import AbstractRobustConnection
from coca_platform import amqp
from coca_platform.db import Pool, create_pool
from coca_platform.egress import egress_session

from coca_plugin.catalog import ToolCatalog
from coca_plugin.events import PluginEvents
from coca_plugin.invocation import CallLimits, ToolCaller
from coca_plugin.service import PluginRegistry, RegistryLimits
from coca_plugin.settings import Settings
from coca_plugin.tools import ToolRunner


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    instance: str  # names this process's fanout queue
    pool: Pool
    amqp: AbstractRobustConnection
    catalog: ToolCatalog
    registry: PluginRegistry
    tools: ToolRunner


@asynccontextmanager
async def open_resources(settings: Settings, *, instance: str) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            create_pool(
                settings.database_url,
                schema="coca_plugin",
                application_name="coca-plugin",
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            )
        )
        connection = await amqp.open_connection(settings.amqp_url, name=f"coca-plugin {instance}")
        stack.push_async_callback(connection.close)
        publisher = await stack.enter_async_context(amqp.open_publisher(connection, app_id="coca-plugin"))
        policy = settings.egress_policy()
        session = await stack.enter_async_context(
            egress_session(policy, timeout_s=settings.tool_timeout_s, limit=settings.tool_max_connections)
        )
        box = settings.secret_box()
        catalog = ToolCatalog(pool, ttl_s=settings.tool_cache_ttl_s, size=settings.tool_cache_size)
        registry = PluginRegistry(
            pool,
            box=box,
            policy=policy,
            catalog=catalog,
            events=PluginEvents(publisher),
            limits=RegistryLimits(
                settings.plugin_max_tools, settings.tool_max_schema_bytes, settings.plugins_per_tenant
            ),
        )
        limits = CallLimits(
            settings.tool_timeout_s, settings.tool_max_response_bytes, settings.tool_max_redirects
        )
        runner = ToolRunner(
            catalog, ToolCaller(session, policy, box, limits), max_args_bytes=settings.tool_max_args_bytes
        )
        yield Resources(settings, instance, pool, connection, catalog, registry, runner)
