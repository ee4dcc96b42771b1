"""Background work of the memory service: the ``document.index`` consumer and the outbox relay.

Both run as tasks for as long as the lifespan does; on exit they stop taking work and finish what
they hold. A task that ends early (a bug, or RabbitMQ refusing the queue) is reported by readiness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from coca_platform import amqp
from coca_platform.errors import Unavailable

from coca_memory import outbox
from coca_memory.resources import Resources

log = logging.getLogger(__name__)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "background task stopped", exc_info=task.exception(), extra={"data": {"task": task.get_name()}}
        )


@asynccontextmanager
async def run_workers(res: Resources) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Start the consumer and the relay; yields a readiness check that fails once either has stopped."""
    s = res.settings
    stop = asyncio.Event()
    consumer = amqp.consume(
        res.amqp,
        s.index_queue,
        res.indexer.handle,
        stop=stop,
        prefetch=s.index_prefetch,
        max_attempts=s.index_max_attempts,
        backoff_s=s.index_retry_delays_s,
    )
    relay = outbox.relay(res.pool, res.requests, interval_s=s.outbox_interval_s, stop=stop)
    tasks = [
        asyncio.create_task(consumer, name="document-index-consumer"),
        asyncio.create_task(relay, name="document-outbox-relay"),
    ]
    for task in tasks:
        task.add_done_callback(_report)

    async def running() -> None:
        for task in tasks:
            if task.done():
                raise Unavailable(f"{task.get_name()} has stopped")

    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait(tasks, timeout=60)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
