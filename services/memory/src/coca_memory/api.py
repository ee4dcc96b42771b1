"""HTTP edge of the memory service: knowledge bases, document uploads and status, search."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from coca_platform import web
from coca_platform.errors import NotFound, PayloadTooLarge
from coca_platform.identity import IdentityDep
from fastapi import APIRouter, Depends, File, Query, UploadFile
from pydantic import BaseModel, Field, StringConstraints

from coca_memory.models import Document, KnowledgeBase, SearchHit
from coca_memory.resources import Resources

router = APIRouter()

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Limit = Annotated[int, Query(ge=1, le=500)]


ResourcesDep = Annotated[Resources, Depends(web.state_resources)]


def _id(value: str, what: str) -> UUID:
    """An id from the path; one that cannot exist is simply not found."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


class KnowledgeBaseCreate(BaseModel):
    name: Name
    description: Description = ""


class KnowledgeBasePublic(BaseModel):
    id: UUID
    name: str
    description: str
    created_at: datetime

    @classmethod
    def of(cls, kb: KnowledgeBase) -> KnowledgeBasePublic:
        return cls(id=kb.id, name=kb.name, description=kb.description, created_at=kb.created_at)


class KnowledgeBasesPage(BaseModel):
    items: list[KnowledgeBasePublic]


class DocumentPublic(BaseModel):
    id: UUID
    knowledge_base_id: UUID
    filename: str
    content_type: str
    size_bytes: int
    status: str
    error: str | None
    chunk_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, doc: Document) -> DocumentPublic:
        return cls(
            id=doc.id,
            knowledge_base_id=doc.kb_id,
            filename=doc.filename,
            content_type=doc.content_type,
            size_bytes=doc.size_bytes,
            status=doc.status.value,
            error=doc.error,
            chunk_count=doc.chunk_count,
            created_at=doc.created_at,
            updated_at=doc.updated_at,
        )


class DocumentsPage(BaseModel):
    items: list[DocumentPublic]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(default=5, ge=1, le=50)


class SearchItem(BaseModel):
    chunk_id: str
    document_id: str
    document_name: str
    position: int
    text: str
    score: float

    @classmethod
    def of(cls, hit: SearchHit) -> SearchItem:
        return cls(
            chunk_id=hit.chunk_id,
            document_id=hit.document_id,
            document_name=hit.document_name,
            position=hit.position,
            text=hit.text,
            score=hit.score,
        )


class SearchResults(BaseModel):
    items: list[SearchItem]


@router.post("/v1/knowledge-bases", status_code=201)
async def create_knowledge_base(
    body: KnowledgeBaseCreate, identity: IdentityDep, res: ResourcesDep
) -> KnowledgeBasePublic:
    async with res.knowledge() as knowledge:
        return KnowledgeBasePublic.of(
            await knowledge.create_kb(identity.tenant_uuid(), body.name, body.description)
        )


@router.get("/v1/knowledge-bases")
async def list_knowledge_bases(
    identity: IdentityDep, res: ResourcesDep, limit: Limit = 100
) -> KnowledgeBasesPage:
    async with res.knowledge() as knowledge:
        found = await knowledge.list_kbs(identity.tenant_uuid(), limit)
    return KnowledgeBasesPage(items=[KnowledgeBasePublic.of(kb) for kb in found])


@router.get("/v1/knowledge-bases/{kb_id}")
async def get_knowledge_base(kb_id: str, identity: IdentityDep, res: ResourcesDep) -> KnowledgeBasePublic:
    async with res.knowledge() as knowledge:
        return KnowledgeBasePublic.of(
            await knowledge.get_kb(identity.tenant_uuid(), _id(kb_id, "knowledge base"))
        )


@router.post("/v1/knowledge-bases/{kb_id}/documents", status_code=202)
async def upload_document(
    kb_id: str, identity: IdentityDep, res: ResourcesDep, file: Annotated[UploadFile, File()]
) -> DocumentPublic:
    """Accept a document (multipart field ``file``) for indexing: 202 with status ``queued``."""
    tenant, kb = identity.tenant_uuid(), _id(kb_id, "knowledge base")
    limit = res.settings.max_document_bytes
    if file.size is not None and file.size > limit:
        raise PayloadTooLarge(f"the document exceeds {limit} bytes")
    data = await file.read(limit + 1)
    async with res.knowledge() as knowledge:
        return DocumentPublic.of(await knowledge.upload(tenant, kb, file.filename, data))


@router.get("/v1/knowledge-bases/{kb_id}/documents")
async def list_documents(
    kb_id: str, identity: IdentityDep, res: ResourcesDep, limit: Limit = 100
) -> DocumentsPage:
    async with res.knowledge() as knowledge:
        found = await knowledge.list_documents(identity.tenant_uuid(), _id(kb_id, "knowledge base"), limit)
    return DocumentsPage(items=[DocumentPublic.of(doc) for doc in found])


@router.get("/v1/knowledge-bases/{kb_id}/documents/{doc_id}")
async def get_document(kb_id: str, doc_id: str, identity: IdentityDep, res: ResourcesDep) -> DocumentPublic:
    async with res.knowledge() as knowledge:
        doc = await knowledge.get_document(
            identity.tenant_uuid(), _id(kb_id, "knowledge base"), _id(doc_id, "document")
        )
    return DocumentPublic.of(doc)


@router.post("/v1/knowledge-bases/{kb_id}/search")
async def search(kb_id: str, body: SearchRequest, identity: IdentityDep, res: ResourcesDep) -> SearchResults:
    async with res.retrieval() as retrieval:
        hits = await retrieval.search(
            identity.tenant_uuid(), [_id(kb_id, "knowledge base")], body.query, body.top_k
        )
    return SearchResults(items=[SearchItem.of(h) for h in hits])
