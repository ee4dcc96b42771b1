"""Distributed rate limits: GCRA buckets in Redis, several checked and charged in one atomic script.

Each ``Limit`` allows ``per_min`` requests a minute and lets the whole minute's allowance come as a
burst. One ``check`` of several limits (client IP + auth-route IP, or user + API key) is all or
nothing: a denied request charges none of its buckets. Time comes from Redis (``TIME``), so gateway
replicas with skewed clocks share buckets correctly. (Single Redis: the keys of one check would need
a common hash tag on Redis Cluster.)

Redis unavailable or slow (over ``timeout_s``): the request is **allowed** (fail open) and a WARNING
is logged, at most once per ``_WARN_EVERY_S``; rate limits protect capacity, and an outage of the
limiter should not become an outage of the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from coca_platform.cache import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_WARN_EVERY_S = 10.0
_PERIOD_MS = 60_000

# KEYS: bucket keys. ARGV: per key, its limit per period and the period (ms).
# Returns {allowed (0|1), retry_after_ms, remaining}. TAT = theoretical arrival time (ms).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local deny_ms = 0
local remaining = -1
local tats = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - period
  if allow_at > now then
    if allow_at - now > deny_ms then deny_ms = allow_at - now end
  else
    tats[i] = new_tat
    local left = math.floor((period - (new_tat - now)) / interval)
    if remaining < 0 or left < remaining then remaining = left end
  end
end
if deny_ms > 0 then
  return {0, math.ceil(deny_ms), 0}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1)
end
return {1, 0, remaining}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    per_min: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int | None  # None: not checked (Redis unavailable)
    retry_after_s: int = 0


_UNCHECKED = Decision(allowed=True, remaining=None)


class RateLimiter:
    def __init__(self, redis: Redis, *, timeout_s: float = 0.25, prefix: str = "coca:rl:") -> None:
        self._script = redis.register_script(_GCRA)
        self._timeout = timeout_s
        self._prefix = prefix
        self._warned_at = float("-inf")

    async def check(self, *limits: Limit) -> Decision:
        keys = [self._prefix + limit.key for limit in limits]
        args: list[int] = []
        for limit in limits:
            args += (limit.per_min, _PERIOD_MS)
        try:
            async with asyncio.timeout(self._timeout):
                allowed, retry_ms, remaining = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._warn(exc)
            return _UNCHECKED
        if allowed:
            return Decision(allowed=True, remaining=int(remaining))
        return Decision(allowed=False, remaining=0, retry_after_s=max(1, -(-int(retry_ms) // 1000)))

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "rate limits unchecked: Redis unavailable, allowing requests",
                extra={"data": {"error": type(exc).__name__}},
            )
