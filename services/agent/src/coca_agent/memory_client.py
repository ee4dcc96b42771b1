"""Retrieval from the memory service (gRPC ``coca.memory.v1.MemoryService``), and how what it returns
enters the prompt and the run's events.

Use it for the life of the service::

    async with MemoryClient(settings.memory_grpc_addr) as memory:      # in open_resources
        chunks = await memory.retrieve(tenant_id, user_text, agent.knowledge_base_ids, top_k)
        system_prompt = agent.system_prompt + format_context(chunks)   # before the LLM call
        ... {"sources": sources_payload(chunks)} ...                   # in the run's events

``retrieve`` raises domain errors (``coca_platform.errors``): ``NotFound`` when a knowledge base is not
the tenant's (or no longer exists), ``InvalidArgument`` for a bad request, ``Unavailable`` /
``DeadlineExceeded`` when the memory service cannot answer in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from coca.memory.v1 import memory_pb2, memory_pb2_grpc
from coca_platform import rpc

# The memory service's own limits: longer queries are cut, larger top_k is capped, not refused.
MAX_QUERY_CHARS = 2000
MAX_TOP_K = 50
EXCERPT_CHARS = 300

_PREAMBLE = (
    "\n\nUse the numbered sources below from the knowledge base when they help to answer. Cite the ones "
    "you use as [n]. If they do not contain the answer, say so rather than guessing.\n"
)


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    """One passage of a document in a knowledge base, with its similarity to the query (cosine, ≤ 1)."""

    document_id: str
    document_name: str
    position: int
    text: str
    score: float


class MemoryClient:
    """A client of the memory service at ``addr`` (``host:port``); ``async with`` opens its channel."""

    def __init__(self, addr: str, *, timeout_s: float = 5.0) -> None:
        self._addr, self._timeout_s = addr, timeout_s
        self._stack = AsyncExitStack()
        self._stub: memory_pb2_grpc.MemoryServiceStub | None = None
        self._channel: Any = None

    async def __aenter__(self) -> Self:
        self._channel = await self._stack.enter_async_context(rpc.open_channel(self._addr))
        self._stub = memory_pb2_grpc.MemoryServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stub = self._channel = None
        await self._stack.aclose()

    def _opened(self) -> memory_pb2_grpc.MemoryServiceStub:
        if self._stub is None:
            raise RuntimeError("use MemoryClient in `async with`")
        return self._stub

    async def retrieve(
        self, tenant_id: UUID | str, query: str, kb_ids: Sequence[UUID | str], top_k: int
    ) -> list[RetrievedChunk]:
        """The ``top_k`` passages of ``kb_ids`` closest to ``query``, best first ([] without kbs or query)."""
        stub = self._opened()
        if not kb_ids or not query.strip():
            return []
        request = memory_pb2.RetrieveRequest(
            tenant_id=str(tenant_id),
            query=query[:MAX_QUERY_CHARS],
            knowledge_base_ids=[str(kb) for kb in kb_ids],
            top_k=max(1, min(top_k, MAX_TOP_K)),
        )
        reply = await rpc.call(stub.Retrieve(request, timeout=self._timeout_s))
        return [
            RetrievedChunk(c.document_id, c.document_name, c.position, c.text, float(c.score))
            for c in reply.chunks
        ]

    async def ping(self) -> None:
        """Readiness: the memory service reports SERVING (else ``Unavailable``)."""
        self._opened()
        await rpc.check_health(self._channel, "coca.memory.v1.MemoryService", timeout=self._timeout_s)


def format_context(chunks: Sequence[RetrievedChunk]) -> str:
    """The addendum to the system prompt: numbered sources ``[1] name (part n)`` with their text.
    Empty when there are no chunks, so it can always be appended."""
    if not chunks:
        return ""
    sources = "\n\n".join(
        f"[{n}] {c.document_name} (part {c.position + 1})\n{c.text.strip()}" for n, c in enumerate(chunks, 1)
    )
    return f"{_PREAMBLE}\n{sources}"


def sources_payload(chunks: Sequence[RetrievedChunk]) -> list[dict[str, Any]]:
    """The sources as event data (JSON): the numbers match ``format_context``'s, excerpts are short."""
    return [
        {
            "index": n,
            "document_id": c.document_id,
            "document_name": c.document_name,
            "position": c.position,
            "score": round(c.score, 4),
            "excerpt": c.text[:EXCERPT_CHARS],
        }
        for n, c in enumerate(chunks, 1)
    ]
