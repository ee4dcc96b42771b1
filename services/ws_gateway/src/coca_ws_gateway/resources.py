"""What the WebSocket edge needs, opened and closed by the lifespan; and the live dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from coca_platform import cache, kafka
from coca_platform.auth import Authenticator
from coca_platform.cache import Redis
from coca_platform.errors import CocaError, Unavailable
from coca_platform.eventlog import EventLog
from coca_platform.httpclient import open_http_session

from coca_ws_gateway.hub import Hub
from coca_ws_gateway.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    redis: Redis
    auth: Authenticator
    eventlog: EventLog
    hub: Hub
    tail: kafka.TailReader
    dispatcher: asyncio.Task[None]

    async def check_kafka(self) -> None:
        if self.dispatcher.done():
            raise Unavailable("the agent events reader has stopped")
        await self.tail.ping()


async def _dispatch_forever(tail: kafka.TailReader, hub: Hub, stop: asyncio.Event, batch_size: int) -> None:
    """The one Kafka tail of this process: every agent event, offered to the local subscribers."""
    while not stop.is_set():
        try:
            async for batch in tail.batches(stop, batch_size=batch_size):
                hub.dispatch(batch)
        except CocaError as exc:  # a fatal consumer error: keep trying, readiness reports it meanwhile
            log.error("agent events reader failed", extra={"data": {"error": exc.message}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(cache.open_redis(settings.redis_url))
        http = await stack.enter_async_context(open_http_session(timeout_s=5.0))
        auth = Authenticator(
            http,
            redis,
            user_service_url=settings.user_service_addr,
            internal_secret=settings.internal_secret.get_secret_value().encode(),
        )
        # Positions are fixed here, before the first client connects: no live event is missed.
        tail = await stack.enter_async_context(
            kafka.open_tail(
                settings.kafka_bootstrap, settings.events_topic, client_id=f"coca-{settings.service_name}"
            )
        )
        hub = Hub()
        stop = asyncio.Event()
        # A burst from one Kafka fetch fills at most a quarter of a client's queue: a client that keeps
        # up is never dropped for a burst, only one that falls behind.
        batch_size = max(1, min(1000, settings.ws_send_queue_max // 4))
        dispatcher = asyncio.create_task(_dispatch_forever(tail, hub, stop, batch_size))

        async def stop_dispatcher() -> None:
            stop.set()
            await asyncio.gather(dispatcher, return_exceptions=True)

        stack.push_async_callback(stop_dispatcher)
        yield Resources(settings, redis, auth, EventLog(redis), hub, tail, dispatcher)
