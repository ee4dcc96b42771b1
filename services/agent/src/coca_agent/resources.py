"""What the agent service holds while it runs, opened and closed by the lifespan in ``app.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from coca_platform.cache import Redis, open_redis
from coca_platform.db import Pool, create_pool
from coca_platform.eventlog import EventLog
from coca_platform.kafka import KafkaProducer, open_producer

from coca_agent.billing_client import BillingClient
from coca_agent.events import EventPublisher
from coca_agent.llm import LlmClient, LlmConfig
from coca_agent.memory_client import MemoryClient
from coca_agent.metering import Metering, sweep_unpublished_usage
from coca_agent.plugin_tools import open_plugin_tools
from coca_agent.registry import RunRegistry
from coca_agent.runs import RunExecutor, RunLimits
from coca_agent.service import AgentService, ChatLimits, ConversationService
from coca_agent.settings import Settings
from coca_agent.tools import NoPluginTools, ToolInvoker


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    pool: Pool
    redis: Redis
    producer: KafkaProducer
    llm: LlmClient
    log: EventLog
    publisher: EventPublisher
    registry: RunRegistry
    executor: RunExecutor
    metering: Metering

    @asynccontextmanager
    async def agents(self) -> AsyncIterator[AgentService]:
        async with self.pool.acquire() as conn:
            yield AgentService(conn)

    @asynccontextmanager
    async def conversations(self) -> AsyncIterator[ConversationService]:
        limits = ChatLimits(self.settings.max_message_chars, self.settings.history_messages)
        async with self.pool.acquire() as conn:
            yield ConversationService(
                conn,
                log=self.log,
                publisher=self.publisher,
                registry=self.registry,
                executor=self.executor,
                metering=self.metering,
                limits=limits,
            )


@asynccontextmanager
async def open_resources(settings: Settings, tools: ToolInvoker | None = None) -> AsyncIterator[Resources]:
    """Open everything; on exit, runs are cancelled first (they still need the rest to record that)."""
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            create_pool(
                settings.database_url,
                schema="coca_agent",
                application_name="coca-agent",
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            )
        )
        redis = await stack.enter_async_context(open_redis(settings.redis_url))
        producer = await stack.enter_async_context(
            open_producer(settings.kafka_bootstrap, client_id="coca-agent")
        )
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.llm_timeout_s),
                connector=aiohttp.TCPConnector(limit=settings.max_concurrent_runs + 8),
            )
        )
        api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        llm = LlmClient(
            http,
            LlmConfig(settings.llm_base_url, api_key, settings.llm_timeout_s, settings.llm_idle_timeout_s),
        )
        log = EventLog(redis)
        if tools is None and settings.plugin_service_addr:
            tools = await stack.enter_async_context(
                open_plugin_tools(
                    settings.plugin_service_addr,
                    settings.internal_secret.get_secret_value(),
                    timeout_s=settings.plugin_timeout_s,
                )
            )
        billing = (
            BillingClient(http, settings.billing_service_addr, settings.internal_secret.get_secret_value())
            if settings.billing_service_addr
            else None
        )
        metering = Metering(billing, producer, settings.billing_reserve_tokens)
        memory = (
            await stack.enter_async_context(MemoryClient(settings.memory_grpc_addr, timeout_s=5))
            if settings.memory_grpc_addr
            else None
        )
        executor = RunExecutor(
            pool,
            llm,
            tools or NoPluginTools(),
            metering,
            RunLimits(settings.llm_model, settings.max_tool_steps, settings.retrieval_top_k),
            memory,
        )
        stop_sweeper = asyncio.Event()
        sweeper = asyncio.create_task(
            sweep_unpublished_usage(
                pool,
                metering,
                settings.llm_model,
                interval_s=settings.usage_sweep_interval_s,
                grace_s=settings.usage_sweep_grace_s,
                stop=stop_sweeper,
            )
        )

        async def stop_sweeping() -> None:
            stop_sweeper.set()
            await sweeper

        stack.push_async_callback(stop_sweeping)
        registry = RunRegistry(settings.max_concurrent_runs)
        stack.push_async_callback(registry.close, settings.run_shutdown_grace_s)
        yield Resources(
            settings,
            pool,
            redis,
            producer,
            llm,
            log,
            EventPublisher(log, producer),
            registry,
            executor,
            metering,
        )
