"""Semantic search over a tenant's knowledge bases, and its long-term memories.

Shared by the HTTP search endpoint and the gRPC ``Retrieve`` / ``UpsertMemory`` / ``DeleteMemory``.
Every call is tenant-scoped: knowledge bases must belong to the tenant (else ``NotFound``, the same
answer as for one that does not exist), and every vector search filters on the tenant.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from coca_platform.errors import InvalidArgument, NotFound

from coca_memory.embedder import EmbeddingRunner
from coca_memory.models import MemoryHit, MemoryRecord, SearchHit
from coca_memory.repository import KnowledgeRepository
from coca_memory.vectorstore import VectorStore

_MEMORY_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
FILTER_KEYS = ("document_id",)


@dataclass(frozen=True, slots=True)
class RetrievalLimits:
    max_query_chars: int
    max_top_k: int
    max_memory_chars: int
    default_top_k: int = 5


def parse_uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidArgument(f"{what} {value!r} is not a UUID") from exc


def _optional_id(value: str, what: str) -> str:
    return str(parse_uuid(value, what)) if value else ""


class RetrievalService:
    def __init__(
        self,
        conn: asyncpg.Connection,
        vectors: VectorStore,
        embeddings: EmbeddingRunner,
        limits: RetrievalLimits,
    ) -> None:
        self._repo = KnowledgeRepository(conn)
        self._vectors, self._embeddings, self._limits = vectors, embeddings, limits

    def _check_query(self, query: str, top_k: int) -> int:
        if not query.strip():
            raise InvalidArgument("query must not be empty")
        if len(query) > self._limits.max_query_chars:
            raise InvalidArgument(f"query is longer than {self._limits.max_query_chars} characters")
        top_k = top_k or self._limits.default_top_k
        if not 1 <= top_k <= self._limits.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self._limits.max_top_k}")
        return top_k

    async def search(
        self,
        tenant_id: UUID,
        kb_ids: Sequence[UUID],
        query: str,
        top_k: int,
        filters: Mapping[str, str] | None = None,
    ) -> list[SearchHit]:
        """The chunks of ``kb_ids`` most similar to ``query``, best first, with their documents' names."""
        hits, _ = await self.retrieve(tenant_id, kb_ids, query, top_k, filters)
        return hits

    async def retrieve(
        self,
        tenant_id: UUID,
        kb_ids: Sequence[UUID],
        query: str,
        top_k: int,
        filters: Mapping[str, str] | None = None,
        user_id: str = "",
    ) -> tuple[list[SearchHit], list[MemoryHit]]:
        """``search``, plus the user's long-term memories closest to the query when ``user_id`` is given;
        all checks pass before the query is embedded, once."""
        top_k = self._check_query(query, top_k)
        unknown = set(filters or {}) - set(FILTER_KEYS)
        if unknown:
            raise InvalidArgument(f"unknown filter {sorted(unknown)[0]!r}; filters: {', '.join(FILTER_KEYS)}")
        doc_filter = [str(parse_uuid(v, "filter document_id")) for v in (filters or {}).values()]
        user = _optional_id(user_id, "user_id")
        wanted = list(dict.fromkeys(kb_ids))
        owned = await self._repo.owned_kbs(tenant_id, wanted) if wanted else set()
        missing = [kb for kb in wanted if kb not in owned]
        if missing:
            raise NotFound(f"knowledge base {str(missing[0])!r} not found")
        if not wanted and not user:
            return [], []
        vector = await self._embeddings.embed_one(query)
        memories = await self._vectors.search_memories(str(tenant_id), user, vector, top_k) if user else []
        if not wanted:
            return [], memories
        found = await self._vectors.search_chunks(
            str(tenant_id), vector, kb_ids=[str(kb) for kb in wanted], top_k=top_k, document_ids=doc_filter
        )
        names = await self._repo.document_names(tenant_id, list({UUID(h.document_id) for h in found}))
        hits = [
            SearchHit(
                h.chunk_id, h.kb_id, h.document_id, names[UUID(h.document_id)], h.position, h.text, h.score
            )
            for h in found
            if UUID(h.document_id) in names  # a chunk of a document deleted meanwhile is not a source
        ]
        return hits, memories

    async def upsert_memory(
        self, tenant_id: UUID, user_id: str, agent_id: str, memory_id: str, text: str
    ) -> str:
        if not text.strip():
            raise InvalidArgument("memory text must not be empty")
        if len(text) > self._limits.max_memory_chars:
            raise InvalidArgument(f"memory text is longer than {self._limits.max_memory_chars} characters")
        user, agent = _optional_id(user_id, "user_id"), _optional_id(agent_id, "agent_id")
        if not user and not agent:
            raise InvalidArgument("a memory belongs to a user or an agent: give user_id or agent_id")
        memory_id = memory_id or str(uuid.uuid4())
        if not _MEMORY_ID_RE.match(memory_id):
            raise InvalidArgument("memory_id may hold only letters, digits and _ . : - (at most 128)")
        vector = (await self._embeddings.embed([text]))[0]
        await self._vectors.upsert_memory(MemoryRecord(str(tenant_id), user, agent, memory_id, text), vector)
        return memory_id

    async def delete_memory(self, tenant_id: UUID, memory_id: str) -> bool:
        if not _MEMORY_ID_RE.match(memory_id):
            raise InvalidArgument("memory_id may hold only letters, digits and _ . : - (at most 128)")
        return await self._vectors.delete_memory(str(tenant_id), memory_id)
