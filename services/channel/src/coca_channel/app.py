"""Wiring of the channel service: the lifespan opens resources and runs the consumers (replies,
notifications) beside the HTTP API; the routers come from ``api``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from coca_platform import amqp, cache, db, web
from coca_platform.errors import Unavailable
from fastapi import FastAPI

from coca_channel import api
from coca_channel.consumers import run_consumers
from coca_channel.resources import open_resources
from coca_channel.settings import Settings

log = logging.getLogger(__name__)


def _consumers_check(task: asyncio.Task[None]) -> Callable[[], Awaitable[None]]:
    """Readiness: the consumers are running (a consumer that could not start, or died, fails it)."""

    async def check() -> None:
        if task.done():
            raise Unavailable("consumers stopped")

    return check


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("consumers failed", exc_info=task.exception())


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings) as res:
            stop = asyncio.Event()
            consumers = asyncio.create_task(run_consumers(res, stop), name="channel-consumers")
            consumers.add_done_callback(_report)
            readiness = {
                "postgres": partial(db.ping, res.pool),
                "redis": partial(cache.ping, res.redis),
                "rabbitmq": partial(amqp.ping, res.amqp),
                "consumers": _consumers_check(consumers),
            }
            try:
                yield {"resources": res, "readiness": readiness}
            finally:
                stop.set()
                await asyncio.wait({consumers}, timeout=40)
                if not consumers.done():
                    consumers.cancel()

    app = web.create_app(settings, lifespan)
    app.include_router(api.router)
    return app
