"""Idempotent consumers: dedupe on the envelope id, in Redis or in the effect's PostgreSQL transaction.

A PostgreSQL consumer includes ``PROCESSED_EVENTS_DDL`` in one of its migrations and, inside the
transaction that applies an event::

    async with conn.transaction():
        if await pg_first_seen(conn, envelope.id, consumer="billing-usage"):
            await apply(conn, envelope)

The claim commits or rolls back with the effect: an exactly-once effect on at-least-once delivery.
Old rows can be deleted by ``processed_at`` once they are older than the topic's retention.
"""

from __future__ import annotations

from typing import Protocol

import asyncpg

from coca_platform.cache import Redis


class Deduper(Protocol):
    async def first_seen(self, event_ids: list[str]) -> list[bool]: ...


class RedisDeduper:
    """Claims event ids in Redis (``SET NX EX``); ``first_seen`` is True for ids not claimed before.

    Claim before the effect; if the effect then fails, ``release`` the ids so a retry is not skipped.
    (A crash between claim and effect can drop that effect: use ``pg_first_seen`` where it matters.)
    """

    def __init__(self, redis: Redis, namespace: str, ttl_s: int = 7 * 24 * 3600) -> None:
        self._redis, self._prefix, self._ttl_s = redis, f"coca:dedupe:{namespace}:", ttl_s

    async def first_seen(self, event_ids: list[str]) -> list[bool]:
        if not event_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.set(self._prefix + event_id, b"1", nx=True, ex=self._ttl_s)
            results = await pipe.execute()
        seen: set[str] = set()
        fresh = []
        for event_id, claimed in zip(event_ids, results, strict=True):
            fresh.append(bool(claimed) and event_id not in seen)  # a duplicate inside one batch counts once
            seen.add(event_id)
        return fresh

    async def release(self, event_ids: list[str]) -> None:
        if event_ids:
            await self._redis.delete(*(self._prefix + e for e in event_ids))


#: Include in the migration of a service that consumes events into PostgreSQL (its own schema).
PROCESSED_EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_processed_at ON processed_events (processed_at);
"""

_CLAIM_EVENT = (
    "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1"
)


async def pg_first_seen(conn: asyncpg.Connection, event_id: str, consumer: str) -> bool:
    """True the first time ``consumer`` sees ``event_id``; call it inside the effect's transaction."""
    return await conn.fetchval(_CLAIM_EVENT, consumer, event_id) is not None
