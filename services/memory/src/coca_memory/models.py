"""Domain types of the memory service. No I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


class DocumentStatus(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class DocumentKind(enum.StrEnum):
    """What an upload is, decided from its extension and its content together."""

    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"
    PDF = "pdf"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]


_CONTENT_TYPES = {
    DocumentKind.TEXT: "text/plain",
    DocumentKind.MARKDOWN: "text/markdown",
    DocumentKind.HTML: "text/html",
    DocumentKind.PDF: "application/pdf",
}


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    id: UUID
    tenant_id: UUID
    name: str
    description: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Document:
    id: UUID
    tenant_id: UUID
    kb_id: UUID
    filename: str
    content_type: str
    size_bytes: int
    object_key: str
    object_version: str | None
    status: DocumentStatus
    error: str | None
    chunk_count: int
    attempts: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document's text, as stored next to its embedding."""

    tenant_id: str
    kb_id: str
    document_id: str
    position: int
    text: str

    @property
    def chunk_id(self) -> str:
        return f"{self.document_id}:{self.position}"  # stable: indexing again overwrites, never duplicates


@dataclass(frozen=True, slots=True)
class VectorHit:
    chunk_id: str
    kb_id: str
    document_id: str
    position: int
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A chunk found by a search, with the name of its document."""

    chunk_id: str
    kb_id: str
    document_id: str
    document_name: str
    position: int
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    tenant_id: str
    user_id: str
    agent_id: str
    memory_id: str
    text: str


@dataclass(frozen=True, slots=True)
class MemoryHit:
    memory_id: str
    text: str
    score: float
