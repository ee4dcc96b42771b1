"""Handing accepted documents to the indexer through RabbitMQ, without losing any.

The documents table is the outbox: a row is written (``queued``, ``published_at`` NULL) before its
``document.index`` message is published, and marked published once RabbitMQ confirmed the message.
The upload publishes at once; if RabbitMQ is unreachable then (or the process dies in between), the
row stays unpublished and ``relay`` publishes it again later. Several replicas may relay at once:
rows are claimed with ``FOR UPDATE SKIP LOCKED``. A message published twice is harmless (the
indexer is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import suppress

from asyncpg.exceptions import PostgresError
from coca_platform.amqp import Publisher
from coca_platform.db import Pool
from coca_platform.envelope import Envelope, new_envelope
from coca_platform.errors import CocaError

from coca_memory.models import Document
from coca_memory.repository import KnowledgeRepository

log = logging.getLogger(__name__)

EXCHANGE = "document"
MESSAGE_TYPE = "document.index"
_BATCH = 100


def index_message(doc: Document) -> Envelope:
    return new_envelope(
        MESSAGE_TYPE,
        source="memory",
        tenant_id=str(doc.tenant_id),
        subject=str(doc.id),
        data={"document_id": str(doc.id), "knowledge_base_id": str(doc.kb_id)},
    )


class IndexRequests:
    """Publishes ``document.index`` messages on the ``document`` exchange with the queue's routing key."""

    def __init__(self, publisher: Publisher, routing_key: str) -> None:
        self._publisher, self._routing_key = publisher, routing_key

    async def publish(self, docs: Sequence[Document]) -> None:
        """Publish and wait for RabbitMQ's confirms (raises ``Unavailable`` when it could not)."""
        await self._publisher.publish_many(
            EXCHANGE, [(self._routing_key, index_message(doc)) for doc in docs]
        )


async def publish_pending(pool: Pool, requests: IndexRequests, *, older_than_s: float) -> int:
    """Publish the documents accepted at least ``older_than_s`` ago whose message is not confirmed."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            repo = KnowledgeRepository(conn)
            docs = await repo.lock_unpublished(older_than_s, _BATCH)
            if not docs:
                return total
            await requests.publish(docs)
            await repo.mark_published([doc.id for doc in docs])
        total += len(docs)
        log.info("pending documents published", extra={"data": {"count": len(docs)}})
        if len(docs) < _BATCH:
            return total


async def relay(pool: Pool, requests: IndexRequests, *, interval_s: float, stop: asyncio.Event) -> None:
    """Run ``publish_pending`` every ``interval_s`` until ``stop`` is set."""
    while not stop.is_set():
        try:
            await publish_pending(pool, requests, older_than_s=interval_s)
        except (CocaError, PostgresError, OSError) as exc:  # the next round tries again
            log.warning("outbox relay round failed", extra={"data": {"error": repr(exc)}})
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
