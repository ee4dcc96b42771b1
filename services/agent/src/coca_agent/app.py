"""Wiring of the agent service: the lifespan opens resources; the routers come from ``api``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from coca_platform import cache, db, web
from coca_platform.errors import Unavailable
from coca_platform.kafka import RedisDeduper
from fastapi import FastAPI

from coca_agent import api
from coca_agent.channel_turns import ChannelTurns
from coca_agent.channel_worker import run_channel_worker
from coca_agent.resources import Resources, open_resources
from coca_agent.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings) as res, _channel_worker(res) as worker:
            readiness = {
                "postgres": partial(db.ping, res.pool),
                "redis": partial(cache.ping, res.redis),
                "kafka": partial(res.producer.ping, settings.readiness_timeout_s),
                "llm": res.llm.ping,
            }
            if worker is not None:
                readiness["channel_worker"] = partial(_running, worker)
            yield {"resources": res, "readiness": readiness}

    app = web.create_app(settings, lifespan)
    app.include_router(api.router)
    return app


@asynccontextmanager
async def _channel_worker(res: Resources) -> AsyncIterator[asyncio.Task[None] | None]:
    """Channel messages (RabbitMQ ``channel.inbound.webhook``) answered by this process's agents."""
    settings = res.settings
    if not settings.channel_worker_enabled:
        yield None
        return
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_channel_worker(
            settings.amqp_url,
            run_turn=ChannelTurns(res).run_turn,
            stop=stop,
            deduper=RedisDeduper(res.redis, "agent-channel-inbound", ttl_s=7 * 24 * 3600),
            prefetch=settings.channel_worker_prefetch,
            turn_timeout_s=settings.channel_turn_timeout_s,
        ),
        name="channel worker",
    )
    try:
        yield task
    finally:
        stop.set()
        await task


async def _running(task: asyncio.Task[None]) -> None:
    if task.done():
        raise Unavailable("the channel worker has stopped")
