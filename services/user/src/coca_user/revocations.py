"""What the gateway must learn was revoked, in Redis: ended sessions and revoked API keys.

Key shapes are shared with the gateway through ``coca_platform.auth``.
"""

from __future__ import annotations

import logging
from uuid import UUID

from coca_platform.auth import API_KEY_CACHE_PREFIX, REVOKED_SESSION_PREFIX
from coca_platform.cache import Redis
from coca_platform.errors import Unavailable
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class RevokedSessions:
    """Sessions ended before their access tokens expire, in Redis, where the gateway checks every JWT."""

    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s  # an access token's lifetime: after that, the token itself is dead

    async def add(self, session_id: UUID) -> None:
        try:
            await self._redis.set(f"{REVOKED_SESSION_PREFIX}{session_id}", "1", ex=self._ttl_s)
        except (RedisError, OSError) as exc:  # the caller may retry: revoking is idempotent
            raise Unavailable("session store unavailable: the session could not be revoked") from exc


class ApiKeyAuthCache:
    """The gateway's cache of verified API keys (``coca:api-key-auth:{sha256 hex}``)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def forget(self, key_hash: str) -> None:
        """Drop a revoked key's entry; if Redis is down the entry still expires on its own (seconds)."""
        try:
            await self._redis.delete(f"{API_KEY_CACHE_PREFIX}{key_hash}")
        except (RedisError, OSError) as exc:
            log.warning(
                "could not drop a revoked API key from the gateway cache",
                extra={"data": {"error": type(exc).__name__}},
            )
