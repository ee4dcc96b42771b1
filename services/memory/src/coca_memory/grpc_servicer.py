"""gRPC edge: ``coca.memory.v1.MemoryService`` (proto ↔ models), delegating to ``RetrievalService``.

The tenant comes from the request: only trusted peers inside the cluster (the agent service) reach
this port. Errors are domain errors; ``coca_platform.rpc.ErrorInterceptor`` maps them to statuses.
"""

from __future__ import annotations

from typing import Any

import grpc
from coca.memory.v1 import memory_pb2, memory_pb2_grpc

from coca_memory.resources import Resources
from coca_memory.retrieval import parse_uuid


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, res: Resources) -> None:
        self._res = res

    async def Retrieve(
        self, request: memory_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.RetrieveResponse:
        tenant_id = parse_uuid(request.tenant_id, "tenant_id")
        kb_ids = [parse_uuid(kb, "knowledge base id") for kb in request.knowledge_base_ids]
        async with self._res.retrieval() as retrieval:
            hits, memories = await retrieval.retrieve(
                tenant_id, kb_ids, request.query, request.top_k, dict(request.filters), request.user_id
            )
        return memory_pb2.RetrieveResponse(
            chunks=[
                memory_pb2.Chunk(
                    chunk_id=h.chunk_id,
                    knowledge_base_id=h.kb_id,
                    document_id=h.document_id,
                    document_name=h.document_name,
                    position=h.position,
                    text=h.text,
                    score=h.score,
                )
                for h in hits
            ],
            memories=[memory_pb2.Memory(memory_id=m.memory_id, text=m.text, score=m.score) for m in memories],
        )

    async def UpsertMemory(
        self, request: memory_pb2.UpsertMemoryRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.UpsertMemoryResponse:
        tenant_id = parse_uuid(request.tenant_id, "tenant_id")
        async with self._res.retrieval() as retrieval:
            memory_id = await retrieval.upsert_memory(
                tenant_id, request.user_id, request.agent_id, request.memory_id, request.text
            )
        return memory_pb2.UpsertMemoryResponse(memory_id=memory_id)

    async def DeleteMemory(
        self, request: memory_pb2.DeleteMemoryRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.DeleteMemoryResponse:
        tenant_id = parse_uuid(request.tenant_id, "tenant_id")
        async with self._res.retrieval() as retrieval:
            deleted = await retrieval.delete_memory(tenant_id, request.memory_id)
        return memory_pb2.DeleteMemoryResponse(deleted=deleted)


def register(res: Resources, server: Any) -> None:
    """Adds the servicer to the server ``coca_platform.rpc.serve_grpc`` builds."""
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(MemoryServicer(res), server)  # type: ignore[no-untyped-call]
