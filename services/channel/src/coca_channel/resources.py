"""What the channel service holds while it runs, opened and closed by the lifespan in ``app.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aio_pika.abc import AbstractRobustConnection
from coca_platform import amqp
from coca_platform.cache import Redis, open_redis
from coca_platform.crypto import SecretBox
from coca_platform.db import Pool, create_pool
from coca_platform.egress import EgressPolicy, egress_session

from coca_channel.delivery import OutboundDelivery
from coca_channel.events import ChannelEvents
from coca_channel.notifications import EmailSender, NotificationHandlers, SmtpConfig
from coca_channel.replay import ReplayGuard
from coca_channel.service import ChannelService, InboundService
from coca_channel.settings import Settings


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    pool: Pool
    redis: Redis
    amqp: AbstractRobustConnection
    events: ChannelEvents
    secrets: SecretBox
    policy: EgressPolicy
    replay: ReplayGuard
    delivery: OutboundDelivery
    notifications: NotificationHandlers

    @asynccontextmanager
    async def channels(self) -> AsyncIterator[ChannelService]:
        async with self.pool.acquire() as conn:
            yield ChannelService(conn, self.secrets, self.policy)

    @asynccontextmanager
    async def inbound(self) -> AsyncIterator[InboundService]:
        s = self.settings
        async with self.pool.acquire() as conn:
            yield InboundService(
                conn,
                self.secrets,
                self.replay,
                self.events,
                tolerance_s=s.signature_tolerance_s,
                max_text_chars=s.inbound_max_text_chars,
            )


def _smtp(settings: Settings) -> SmtpConfig:
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpConfig(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_from,
        settings.smtp_user,
        password,
        settings.smtp_starttls,
        settings.smtp_timeout_s,
    )


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open everything and declare the RabbitMQ topology (idempotent)."""
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            create_pool(
                settings.database_url,
                schema="coca_channel",
                application_name="coca-channel",
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            )
        )
        redis = await stack.enter_async_context(open_redis(settings.redis_url))
        connection = await amqp.open_connection(settings.amqp_url, name="coca-channel")
        stack.push_async_callback(connection.close)
        async with connection.channel() as channel:
            await amqp.declare_topology(channel)
        publisher = await stack.enter_async_context(amqp.open_publisher(connection, app_id="coca-channel"))
        policy = settings.egress_policy()
        http = await stack.enter_async_context(egress_session(policy, timeout_s=settings.outbound_timeout_s))
        secrets = settings.secret_box()
        delivery = OutboundDelivery(
            pool,
            secrets,
            http,
            policy,
            max_attempts=settings.outbound_max_attempts,
            timeout_s=settings.outbound_timeout_s,
            max_response_bytes=settings.outbound_max_response_bytes,
        )
        notifications = NotificationHandlers(
            EmailSender(_smtp(settings)),
            http,
            policy,
            push_timeout_s=settings.push_timeout_s,
            max_response_bytes=settings.outbound_max_response_bytes,
        )
        yield Resources(
            settings,
            pool,
            redis,
            connection,
            ChannelEvents(publisher),
            secrets,
            policy,
            ReplayGuard(redis, tolerance_s=settings.signature_tolerance_s),
            delivery,
            notifications,
        )
