"""Use-cases behind the HTTP API: knowledge bases, uploads and document status.

An upload is validated (size, name, type by extension and content) before anything is written; then
the object goes to S3, the row to PostgreSQL (``queued``, the outbox), and the ``document.index``
message to RabbitMQ (see ``outbox``).
"""

from __future__ import annotations

import logging
import uuid
from uuid import UUID

import asyncpg
from coca_platform.errors import NotFound, PayloadTooLarge, Unavailable

from coca_memory.models import Document, KnowledgeBase
from coca_memory.objectstore import ObjectStore
from coca_memory.outbox import IndexRequests
from coca_memory.parsing import clean_filename, detect_kind
from coca_memory.repository import KnowledgeRepository

log = logging.getLogger(__name__)


class KnowledgeService:
    def __init__(
        self,
        conn: asyncpg.Connection,
        store: ObjectStore,
        requests: IndexRequests,
        *,
        max_document_bytes: int,
    ) -> None:
        self._repo = KnowledgeRepository(conn)
        self._store, self._requests, self._max_bytes = store, requests, max_document_bytes

    async def create_kb(self, tenant_id: UUID, name: str, description: str) -> KnowledgeBase:
        kb = await self._repo.insert_kb(tenant_id, name, description)
        log.info("knowledge base created", extra={"data": {"kb_id": str(kb.id), "tenant_id": str(tenant_id)}})
        return kb

    async def get_kb(self, tenant_id: UUID, kb_id: UUID) -> KnowledgeBase:
        kb = await self._repo.get_kb(tenant_id, kb_id)
        if kb is None:
            raise NotFound(f"knowledge base {str(kb_id)!r} not found")
        return kb

    async def list_kbs(self, tenant_id: UUID, limit: int) -> list[KnowledgeBase]:
        return await self._repo.list_kbs(tenant_id, limit)

    async def upload(self, tenant_id: UUID, kb_id: UUID, filename: str | None, data: bytes) -> Document:
        if len(data) > self._max_bytes:
            raise PayloadTooLarge(f"the document exceeds {self._max_bytes} bytes")
        name = clean_filename(filename)
        kind = detect_kind(name, data[:8192])
        await self.get_kb(tenant_id, kb_id)
        doc_id = uuid.uuid4()
        stored = await self._store.put(f"{tenant_id}/{kb_id}/{doc_id}/{name}", data, kind.content_type)
        doc = await self._repo.insert_document(
            doc_id, tenant_id, kb_id, name, kind.content_type, len(data), stored.key, stored.version_id
        )
        try:
            await self._requests.publish([doc])
        except Unavailable as exc:  # the row is the outbox: the relay publishes it later
            data_ = {"document_id": str(doc_id), "error": exc.message}
            log.warning("document index message deferred to the outbox", extra={"data": data_})
        else:
            await self._repo.mark_published([doc_id])
        log.info("document accepted", extra={"data": {"document_id": str(doc_id), "bytes": len(data)}})
        return doc

    async def get_document(self, tenant_id: UUID, kb_id: UUID, doc_id: UUID) -> Document:
        doc = await self._repo.get_document(tenant_id, kb_id, doc_id)
        if doc is None:
            raise NotFound(f"document {str(doc_id)!r} not found")
        return doc

    async def list_documents(self, tenant_id: UUID, kb_id: UUID, limit: int) -> list[Document]:
        await self.get_kb(tenant_id, kb_id)
        return await self._repo.list_documents(tenant_id, kb_id, limit)
