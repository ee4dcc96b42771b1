"""asyncpg SQL for knowledge bases and documents → models. Every query is scoped by tenant."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from coca_memory.models import Document, DocumentStatus, KnowledgeBase

_INSERT_KB = """
INSERT INTO knowledge_bases (tenant_id, name, description) VALUES ($1, $2, $3)
RETURNING id, tenant_id, name, description, created_at
"""
_GET_KB = """
SELECT id, tenant_id, name, description, created_at FROM knowledge_bases WHERE tenant_id = $1 AND id = $2
"""
_LIST_KBS = """
SELECT id, tenant_id, name, description, created_at FROM knowledge_bases WHERE tenant_id = $1
ORDER BY created_at DESC, id DESC LIMIT $2
"""
_OWNED_KBS = "SELECT id FROM knowledge_bases WHERE tenant_id = $1 AND id = ANY($2::uuid[])"

_INSERT_DOC = """
INSERT INTO documents (id, tenant_id, kb_id, filename, content_type, size_bytes, object_key, object_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, tenant_id, kb_id, filename, content_type, size_bytes, object_key, object_version, status,
    error, chunk_count, attempts, created_at, updated_at
"""
_GET_DOC = """
SELECT id, tenant_id, kb_id, filename, content_type, size_bytes, object_key, object_version, status,
    error, chunk_count, attempts, created_at, updated_at
FROM documents WHERE tenant_id = $1 AND kb_id = $2 AND id = $3
"""
_GET_DOC_FOR_INDEXING = """
SELECT id, tenant_id, kb_id, filename, content_type, size_bytes, object_key, object_version, status,
    error, chunk_count, attempts, created_at, updated_at
FROM documents WHERE tenant_id = $1 AND id = $2
"""
_LIST_DOCS = """
SELECT id, tenant_id, kb_id, filename, content_type, size_bytes, object_key, object_version, status,
    error, chunk_count, attempts, created_at, updated_at
FROM documents WHERE tenant_id = $1 AND kb_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3
"""
_NAMES = "SELECT id, filename FROM documents WHERE tenant_id = $1 AND id = ANY($2::uuid[])"
_MARK_PUBLISHED = "UPDATE documents SET published_at = now() WHERE id = ANY($1::uuid[])"
_UNPUBLISHED = """
SELECT id, tenant_id, kb_id, filename, content_type, size_bytes, object_key, object_version, status,
    error, chunk_count, attempts, created_at, updated_at
FROM documents WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
"""
# Claims a document for indexing: from queued, or again from processing (an attempt that died).
_START = """
UPDATE documents SET status = 'processing', attempts = attempts + 1, error = NULL, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'processing')
RETURNING id, tenant_id, kb_id, filename, content_type, size_bytes, object_key, object_version, status,
    error, chunk_count, attempts, created_at, updated_at
"""
_FINISH = """
UPDATE documents SET status = $3, error = $4, chunk_count = $5, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND status = 'processing'
RETURNING id, tenant_id, kb_id, filename, content_type, size_bytes, object_key, object_version, status,
    error, chunk_count, attempts, created_at, updated_at
"""
# A session lock per document, held while one worker indexes it; released if the worker dies.
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"


def _kb(row: asyncpg.Record) -> KnowledgeBase:
    return KnowledgeBase(**dict(row))


def _doc(row: asyncpg.Record) -> Document:
    values = dict(row)
    values["status"] = DocumentStatus(values["status"])
    return Document(**values)


class KnowledgeRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert_kb(self, tenant_id: UUID, name: str, description: str) -> KnowledgeBase:
        return _kb(await self._conn.fetchrow(_INSERT_KB, tenant_id, name, description))

    async def get_kb(self, tenant_id: UUID, kb_id: UUID) -> KnowledgeBase | None:
        row = await self._conn.fetchrow(_GET_KB, tenant_id, kb_id)
        return _kb(row) if row else None

    async def list_kbs(self, tenant_id: UUID, limit: int) -> list[KnowledgeBase]:
        return [_kb(r) for r in await self._conn.fetch(_LIST_KBS, tenant_id, limit)]

    async def owned_kbs(self, tenant_id: UUID, kb_ids: list[UUID]) -> set[UUID]:
        return {r["id"] for r in await self._conn.fetch(_OWNED_KBS, tenant_id, kb_ids)}

    async def insert_document(
        self,
        doc_id: UUID,
        tenant_id: UUID,
        kb_id: UUID,
        filename: str,
        content_type: str,
        size_bytes: int,
        object_key: str,
        object_version: str | None,
    ) -> Document:
        row = await self._conn.fetchrow(
            _INSERT_DOC,
            doc_id,
            tenant_id,
            kb_id,
            filename,
            content_type,
            size_bytes,
            object_key,
            object_version,
        )
        return _doc(row)

    async def get_document(self, tenant_id: UUID, kb_id: UUID, doc_id: UUID) -> Document | None:
        row = await self._conn.fetchrow(_GET_DOC, tenant_id, kb_id, doc_id)
        return _doc(row) if row else None

    async def document_for_indexing(self, tenant_id: UUID, doc_id: UUID) -> Document | None:
        row = await self._conn.fetchrow(_GET_DOC_FOR_INDEXING, tenant_id, doc_id)
        return _doc(row) if row else None

    async def list_documents(self, tenant_id: UUID, kb_id: UUID, limit: int) -> list[Document]:
        return [_doc(r) for r in await self._conn.fetch(_LIST_DOCS, tenant_id, kb_id, limit)]

    async def document_names(self, tenant_id: UUID, doc_ids: list[UUID]) -> dict[UUID, str]:
        return {r["id"]: r["filename"] for r in await self._conn.fetch(_NAMES, tenant_id, doc_ids)}

    async def mark_published(self, doc_ids: list[UUID]) -> None:
        await self._conn.execute(_MARK_PUBLISHED, doc_ids)

    async def lock_unpublished(self, older_than_s: float, limit: int) -> list[Document]:
        """Documents whose message is not confirmed yet, locked until the transaction ends."""
        return [_doc(r) for r in await self._conn.fetch(_UNPUBLISHED, older_than_s, limit)]

    async def start_indexing(self, tenant_id: UUID, doc_id: UUID) -> Document | None:
        row = await self._conn.fetchrow(_START, tenant_id, doc_id)
        return _doc(row) if row else None

    async def finish_indexing(
        self, tenant_id: UUID, doc_id: UUID, status: DocumentStatus, error: str | None, chunk_count: int
    ) -> Document | None:
        row = await self._conn.fetchrow(_FINISH, tenant_id, doc_id, status.value, error, chunk_count)
        return _doc(row) if row else None

    async def try_lock(self, key: str) -> bool:
        return bool(await self._conn.fetchval(_TRY_LOCK, key))

    async def unlock(self, key: str) -> None:
        await self._conn.fetchval(_UNLOCK, key)
