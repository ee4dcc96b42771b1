"""Per-conversation event log in Redis: what lets streams survive reconnects.

Every envelope of a conversation is appended to a Redis stream (``coca:ev:{subject}``) with a
per-subject sequence number, in one atomic script call. Readers resume after an event id (SSE
``Last-Event-ID``, ``?after=``, WebSocket ``after``) and can follow the stream live. The agent
writes it; the agent's replay endpoint and ws_gateway read it. Kafka ``agent.events`` carries the
same envelopes (with ``seq``) to consumers.

Keys (all expire ``ttl_s`` after the last write):
- ``coca:ev:{subject}``      stream of ``{"e": envelope JSON}``, capped at ``max_len`` entries
- ``coca:evidx:{subject}``   hash event id → stream entry id
- ``coca:evseq:{subject}``   the last sequence number
- ``coca:evown:{subject}``   the tenant that owns the subject (set when it is created)

A live ``follow`` holds one Redis connection while it blocks (``block_ms``); size the client's pool
(``max_connections``) for the number of concurrent followers a process serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from coca_platform.cache import Redis
from coca_platform.envelope import Envelope
from coca_platform.errors import NotFound

_APPEND = """
local seq = redis.call('INCR', KEYS[3])
local raw = string.sub(ARGV[1], 1, -2) .. ',"seq":' .. seq .. '}'
local sid = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', raw)
redis.call('HSET', KEYS[2], ARGV[4], sid)
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return {sid, raw}
"""


def _keys(subject: str) -> tuple[str, str, str, str]:
    return f"coca:ev:{subject}", f"coca:evidx:{subject}", f"coca:evseq:{subject}", f"coca:evown:{subject}"


class EventLog:
    def __init__(self, redis: Redis, *, ttl_s: int = 7 * 24 * 3600, max_len: int = 20_000) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._max_len = max_len
        self._append = redis.register_script(_APPEND)

    async def set_owner(self, subject: str, tenant_id: str) -> None:
        await self._redis.set(f"coca:evown:{subject}", tenant_id, ex=self._ttl_s)

    async def owner(self, subject: str) -> str | None:
        raw = await self._redis.get(f"coca:evown:{subject}")
        return raw.decode() if isinstance(raw, bytes) else raw

    async def check_owner(self, subject: str, tenant_id: str) -> None:
        """NotFound unless ``subject`` belongs to ``tenant_id`` (never says whether it exists elsewhere)."""
        if await self.owner(subject) != tenant_id:
            raise NotFound(f"conversation {subject!r} not found")

    async def append(self, envelope: Envelope) -> tuple[str, bytes]:
        """Append; returns ``(stream entry id, envelope JSON with seq)``. The JSON is spliced, never
        re-encoded, so the bytes stay exactly as serialised here. Every key's TTL is refreshed."""
        if envelope.seq is not None:
            raise ValueError("the event log assigns seq")
        sid, raw = await self._append(
            keys=_keys(envelope.subject),
            args=[envelope.to_json(), self._max_len, self._ttl_s, envelope.id],
        )
        return _s(sid), raw if isinstance(raw, bytes) else raw.encode()

    async def position(self, subject: str, event_id: str | None) -> str:
        """The stream position just after ``event_id`` ("0-0" for the start). Unknown ids are NotFound:
        a client must not silently skip events because its cursor expired."""
        if not event_id:
            return "0-0"
        sid = await self._redis.hget(_keys(subject)[1], event_id)
        if sid is None:
            raise NotFound(f"event {event_id!r} not found in this conversation's log")
        return _s(sid)

    async def read_after(self, subject: str, position: str, count: int = 1000) -> list[tuple[str, bytes]]:
        """Entries strictly after ``position``: ``[(entry id, envelope JSON)]``."""
        entries: Any = await self._redis.xrange(_keys(subject)[0], min=f"({position}", max="+", count=count)
        return [(_s(sid), fields[b"e"]) for sid, fields in entries]

    async def follow(
        self, subject: str, position: str, *, block_ms: int = 15_000, count: int = 500
    ) -> AsyncIterator[list[tuple[str, bytes]]]:
        """Batches of entries after ``position``, live; yields ``[]`` after ``block_ms`` of silence so the
        caller can send a heartbeat or stop. Runs until the caller stops iterating."""
        key = _keys(subject)[0]
        while True:
            reply: Any = await self._redis.xread({key: position}, count=count, block=block_ms)
            batch = [(_s(sid), fields[b"e"]) for _, entries in (reply or []) for sid, fields in entries]
            if batch:
                position = batch[-1][0]
            yield batch


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def is_terminal(raw: bytes) -> bool:
    """Whether an envelope ends a run (the replay stream can close after it)."""
    return orjson.loads(raw).get("type") in ("run.completed", "run.failed")
