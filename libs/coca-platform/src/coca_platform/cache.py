"""Redis: one client per service, opened and closed by the service's resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from coca_platform.errors import Unavailable

Redis = aioredis.Redis


@asynccontextmanager
async def open_redis(
    url: str, *, max_connections: int = 64, pool_timeout_s: float = 10.0
) -> AsyncIterator[Redis]:
    """A client over a blocking pool: a burst wider than ``max_connections`` waits (up to
    ``pool_timeout_s``) for a free connection instead of failing at once."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout_s, health_check_interval=30
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise Unavailable(f"cannot connect to Redis: {exc}") from exc
    try:
        yield client
    finally:
        await client.aclose()


async def ping(client: Redis) -> None:
    await client.ping()
