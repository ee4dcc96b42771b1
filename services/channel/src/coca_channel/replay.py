"""Replay protection for signed inbound requests: each signature is accepted once (Redis ``SET NX``).

A claimed signature is kept for twice the timestamp tolerance (a timestamp may be that far in the
future, then stays valid that long), after which the timestamp check alone refuses the request.
A request that fails after its claim ``release`` s it, so the sender's retry of the very same request
is not mistaken for a replay.
"""

from __future__ import annotations

from uuid import UUID

from coca_platform.cache import Redis
from coca_platform.errors import Unavailable
from redis.exceptions import RedisError

_PREFIX = "coca:channel:replay:"


class ReplayGuard:
    def __init__(self, redis: Redis, *, tolerance_s: int) -> None:
        self._redis, self._ttl_s = redis, 2 * tolerance_s + 1

    @staticmethod
    def _key(channel_id: UUID, signature: str) -> str:
        return f"{_PREFIX}{channel_id}:{signature}"

    async def claim(self, channel_id: UUID, signature: str) -> bool:
        """True the first time this signature is seen for this channel (within the window)."""
        try:
            return bool(
                await self._redis.set(self._key(channel_id, signature), b"1", nx=True, ex=self._ttl_s)
            )
        except (RedisError, OSError) as exc:
            raise Unavailable(f"replay guard unavailable: {exc}") from exc

    async def release(self, channel_id: UUID, signature: str) -> None:
        try:
            await self._redis.delete(self._key(channel_id, signature))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"replay guard unavailable: {exc}") from exc
