"""The channel service's RabbitMQ consumers: replies (``channel.outbound``) and notifications
(``notification.email``, ``notification.push``), until ``stop`` is set."""

from __future__ import annotations

import asyncio
from functools import partial

from coca_platform.amqp import consume
from coca_platform.kafka import RedisDeduper

from coca_channel.events import EMAIL_QUEUE, OUTBOUND_QUEUE, PUSH_QUEUE
from coca_channel.resources import Resources


async def run_consumers(res: Resources, stop: asyncio.Event) -> None:
    """Returns once every consumer has stopped and drained; one failing fails them all."""
    s = res.settings
    run = partial(consume, res.amqp, stop=stop, prefetch=s.consumer_prefetch)
    notify = partial(run, max_attempts=s.notification_max_attempts, backoff_s=s.notification_backoff_s)
    async with asyncio.TaskGroup() as group:
        group.create_task(
            run(
                OUTBOUND_QUEUE,
                res.delivery.handle,
                max_attempts=s.outbound_max_attempts,
                backoff_s=s.outbound_backoff_s,
            )
        )
        email_deduper = RedisDeduper(res.redis, "channel-email")
        group.create_task(notify(EMAIL_QUEUE, res.notifications.email, deduper=email_deduper))
        push_deduper = RedisDeduper(res.redis, "channel-push")
        group.create_task(notify(PUSH_QUEUE, res.notifications.push, deduper=push_deduper))
