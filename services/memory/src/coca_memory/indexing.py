"""The ``document.index`` worker: fetch → parse → chunk → embed → Milvus → ``ready`` or ``failed``.

Idempotent and safe under redelivery and duplicates:

- a per-document PostgreSQL session lock lets one worker index a document at a time (a duplicate
  delivered meanwhile is acknowledged as a no-op: the holder owns the outcome); the lock dies with
  the worker's connection, so a crashed worker never blocks the redelivery;
- only a ``queued`` or ``processing`` document is (re)indexed; ``ready`` and ``failed`` are final,
  so a redelivered message for them does nothing;
- chunk ids are ``<document_id>:<position>`` and a document's old chunks are replaced, so a second
  pass never duplicates vectors.

A document that cannot be indexed (no text, unreadable PDF, too many chunks, its object gone) ends
``failed`` with the reason. Other failures (S3 or Milvus down) are retried with backoff by the
consumer; the attempt that reaches ``max_attempts`` marks the document ``failed`` instead of raising.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from uuid import UUID

from coca_platform.db import Pool
from coca_platform.envelope import Envelope
from coca_platform.errors import CocaError, InvalidArgument, NotFound

from coca_memory.chunking import split_text
from coca_memory.embedder import EmbeddingRunner
from coca_memory.models import Chunk, Document, DocumentKind, DocumentStatus
from coca_memory.objectstore import ObjectStore
from coca_memory.parsing import DocumentRejected, extract_text
from coca_memory.repository import KnowledgeRepository
from coca_memory.vectorstore import VectorStore

log = logging.getLogger(__name__)

_KINDS = {kind.content_type: kind for kind in DocumentKind}


@dataclass(frozen=True, slots=True)
class IndexLimits:
    chunk_size: int
    chunk_overlap: int
    max_chunks: int
    max_attempts: int


class DocumentIndexer:
    def __init__(
        self,
        pool: Pool,
        store: ObjectStore,
        vectors: VectorStore,
        embeddings: EmbeddingRunner,
        executor: Executor,
        limits: IndexLimits,
    ) -> None:
        self._pool, self._store, self._vectors = pool, store, vectors
        self._embeddings, self._executor, self._limits = embeddings, executor, limits

    async def handle(self, envelope: Envelope) -> None:
        """The consumer's handler for one ``document.index`` message."""
        try:
            tenant_id = UUID(envelope.tenant_id)
            doc_id = UUID(str(envelope.data["document_id"]))
        except (KeyError, ValueError) as exc:
            raise InvalidArgument(f"document.index message {envelope.id!r} names no document") from exc
        lock = f"coca-memory-index:{doc_id}"
        async with self._pool.acquire() as conn:
            repo = KnowledgeRepository(conn)
            if not await repo.try_lock(lock):
                log.info("document already being indexed", extra={"data": {"document_id": str(doc_id)}})
                return
            try:
                await self._index_locked(repo, tenant_id, doc_id)
            finally:
                await repo.unlock(lock)

    async def _index_locked(self, repo: KnowledgeRepository, tenant_id: UUID, doc_id: UUID) -> None:
        doc = await repo.start_indexing(tenant_id, doc_id)
        if doc is None:  # ready or failed (final), or not there at all
            found = await repo.document_for_indexing(tenant_id, doc_id)
            status = found.status.value if found else "missing"
            skipped = {"document_id": str(doc_id), "status": status}
            log.info("document index message skipped", extra={"data": skipped})
            return
        started = time.perf_counter()
        try:
            count = await self._index(doc)
        except DocumentRejected as exc:
            await repo.finish_indexing(tenant_id, doc_id, DocumentStatus.FAILED, exc.message, 0)
            log.info("document rejected", extra={"data": {"document_id": str(doc_id), "reason": exc.message}})
            return
        except Exception as exc:  # the consumer edge: retried by the consumer, until the last attempt
            if doc.attempts < self._limits.max_attempts:
                raise
            reason = exc.message if isinstance(exc, CocaError) else "internal error"
            message = f"indexing failed after {doc.attempts} attempts: {reason}"
            await repo.finish_indexing(tenant_id, doc_id, DocumentStatus.FAILED, message, 0)
            data: dict[str, object] = {"document_id": str(doc_id), "attempts": doc.attempts}
            log.error("document indexing gave up", exc_info=exc, extra={"data": data})
            return
        await repo.finish_indexing(tenant_id, doc_id, DocumentStatus.READY, None, count)
        done: dict[str, object] = {
            "document_id": str(doc_id),
            "chunks": count,
            "ms": round((time.perf_counter() - started) * 1000),
        }
        log.info("document indexed", extra={"data": done})

    async def _index(self, doc: Document) -> int:
        try:
            data = await self._store.get(doc.object_key, doc.object_version)
        except NotFound as exc:
            raise DocumentRejected("the uploaded file is no longer in storage") from exc
        kind = _KINDS.get(doc.content_type)
        if kind is None:
            raise DocumentRejected(f"documents of type {doc.content_type!r} are not indexed")
        loop = asyncio.get_running_loop()
        texts = await loop.run_in_executor(self._executor, self._split, kind, data)
        chunks = [
            Chunk(str(doc.tenant_id), str(doc.kb_id), str(doc.id), position, text)
            for position, text in enumerate(texts)
        ]
        vectors = await self._embeddings.embed(texts)
        await self._vectors.replace_document(str(doc.tenant_id), str(doc.id), chunks, vectors)
        return len(chunks)

    def _split(self, kind: DocumentKind, data: bytes) -> list[str]:
        limits = self._limits
        texts = split_text(extract_text(kind, data), limits.chunk_size, limits.chunk_overlap)
        if len(texts) > limits.max_chunks:
            raise DocumentRejected(
                f"the document is too large to index: {len(texts)} chunks, at most {limits.max_chunks}"
            )
        return texts
