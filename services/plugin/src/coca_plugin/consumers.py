"""This process's consumer of the ``plugin`` fanout: drops cached plugins that any replica changed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from coca_platform import amqp
from coca_platform.errors import Unavailable

from coca_plugin.events import EXCHANGE, InvalidationHandler, fanout_queue_name
from coca_plugin.resources import Resources


@asynccontextmanager
async def run_consumers(res: Resources) -> AsyncIterator[asyncio.Task[None]]:
    """Bind this process's queue before returning (changes published from then on reach it), consume
    it in a task until exit. Yields the task (readiness checks that it still runs)."""
    queue = fanout_queue_name(res.instance)
    channel = await res.amqp.channel()
    try:
        await amqp.declare_fanout_queue(channel, EXCHANGE, queue)
    finally:
        await channel.close()
    stop = asyncio.Event()
    task = asyncio.create_task(
        amqp.consume(res.amqp, queue, InvalidationHandler(res.catalog), stop=stop, fanout=EXCHANGE),
        name=f"consumer {queue}",
    )
    try:
        yield task
    finally:
        stop.set()
        await task


async def check_running(task: asyncio.Task[None]) -> None:
    if task.done():
        raise Unavailable("the plugin event consumer stopped")
