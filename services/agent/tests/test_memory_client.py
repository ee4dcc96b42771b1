"""MemoryClient against the real memory service (its app in-process: HTTP for setup, gRPC under test),
on the session's PostgreSQL, RabbitMQ and S3, with milvus-lite in a temporary directory."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
import pytest
from coca_agent.memory_client import MemoryClient, RetrievedChunk, format_context, sources_payload
from coca_memory.app import create_app
from coca_memory.settings import Settings as MemorySettings
from coca_platform.amqp import retry_queue_name
from coca_platform.errors import NotFound, Unavailable
from coca_platform.identity import Identity
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client, free_port, migrate_for_tests, signed_headers

GUIDE = (
    (
        "Returns. Items can be returned within thirty days for a full refund; send them back with the "
        "return label printed from your account page. Refunds reach your card within five working days. "
    )
    * 3
    + "\n\n"
    + (
        "Opening hours. The shop in Utrecht is open from nine to six on weekdays and from ten to four on "
        "Saturdays; it is closed on Sundays and public holidays. "
    )
    * 3
)


@dataclass(frozen=True)
class Memory:
    """The memory service under test: its gRPC address and a knowledge base with one ready document."""

    addr: str
    tenant_id: str
    kb_id: str
    doc_id: str


async def _delete_queues(amqp_url: str, settings: MemorySettings) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        names = [settings.index_queue, f"{settings.index_queue}.dlq"]
        for name in names + [
            retry_queue_name(settings.index_queue, d) for d in settings.index_retry_delays_s
        ]:
            await channel.queue_delete(name)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def memory(infra: LocalInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Memory]:
    await migrate_for_tests(infra.database_url, schema="coca_memory", package="coca_memory")
    queue = f"document.index.test-{uuid.uuid4().hex[:12]}"
    settings = MemorySettings(
        environment="test",
        database_url=infra.database_url,
        amqp_url=infra.amqp_url,
        s3_endpoint=infra.s3_endpoint,
        milvus_lite_path=str(Path(tmp_path_factory.mktemp("memory-milvus")) / "milvus.db"),
        grpc_port=free_port(),
        index_queue=queue,
        index_routing_key=queue,
        index_retry_delays_s=(0.2,),
        db_pool_max=4,
    )
    tenant_id = str(uuid.uuid4())
    identity = Identity(tenant_id=tenant_id, user_id=str(uuid.uuid4()))
    headers = signed_headers(identity, settings.internal_secret.get_secret_value())
    try:
        async with asgi_client(create_app(settings)) as http:
            kb_id, doc_id = await _indexed_document(http, headers)
            yield Memory(f"127.0.0.1:{settings.grpc_port}", tenant_id, kb_id, doc_id)
    finally:
        await _delete_queues(infra.amqp_url, settings)


async def _indexed_document(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, str]:
    kb = await http.post("/v1/knowledge-bases", json={"name": "shop"}, headers=headers)
    assert kb.status_code == 201, kb.text
    kb_id = kb.json()["id"]
    upload = await http.post(
        f"/v1/knowledge-bases/{kb_id}/documents",
        files={"file": ("shop-guide.md", GUIDE.encode())},
        headers=headers,
    )
    assert upload.status_code == 202, upload.text
    doc_id = upload.json()["id"]
    async with asyncio.timeout(60):
        while True:
            doc = (await http.get(f"/v1/knowledge-bases/{kb_id}/documents/{doc_id}", headers=headers)).json()
            if doc["status"] != "queued" and doc["status"] != "processing":
                assert doc["status"] == "ready", doc
                return kb_id, doc_id
            await asyncio.sleep(0.1)


async def test_retrieve_returns_the_passage_that_answers_first(memory: Memory) -> None:
    async with MemoryClient(memory.addr) as client:
        chunks = await client.retrieve(memory.tenant_id, "How do I send something back?", [memory.kb_id], 2)

    assert len(chunks) == 2
    best = chunks[0]
    assert isinstance(best, RetrievedChunk)
    assert "return label" in best.text
    assert (best.document_id, best.document_name) == (memory.doc_id, "shop-guide.md")
    assert best.score > chunks[1].score


async def test_context_numbers_the_sources_the_events_report(memory: Memory) -> None:
    async with MemoryClient(memory.addr) as client:
        chunks = await client.retrieve(
            memory.tenant_id, "When is the shop open on Saturday?", [memory.kb_id], 2
        )

    context = format_context(chunks)
    sources = sources_payload(chunks)

    assert "[1] shop-guide.md (part" in context
    assert "[2] shop-guide.md (part" in context
    assert "ten to four" in context.split("[2]")[0]  # the best passage is source 1
    assert [s["index"] for s in sources] == [1, 2]
    assert sources[0] == {
        "index": 1,
        "document_id": memory.doc_id,
        "document_name": "shop-guide.md",
        "position": chunks[0].position,
        "score": round(chunks[0].score, 4),
        "excerpt": chunks[0].text[:300],
    }
    assert format_context([]) == ""
    assert sources_payload([]) == []


async def test_an_agent_without_knowledge_bases_retrieves_nothing_without_a_call() -> None:
    async with MemoryClient(f"127.0.0.1:{free_port()}", timeout_s=0.5) as client:  # nothing listens there
        assert await client.retrieve(str(uuid.uuid4()), "anything", [], 5) == []


async def test_another_tenants_knowledge_base_is_not_found(memory: Memory) -> None:
    async with MemoryClient(memory.addr) as client:
        with pytest.raises(NotFound):
            await client.retrieve(str(uuid.uuid4()), "refund", [memory.kb_id], 3)


async def test_long_queries_and_large_top_k_are_bounded_not_refused(memory: Memory) -> None:
    async with MemoryClient(memory.addr) as client:
        chunks = await client.retrieve(memory.tenant_id, "refund " * 1000, [memory.kb_id], 500)

    assert chunks


async def test_an_unreachable_memory_service_is_unavailable() -> None:
    async with MemoryClient(f"127.0.0.1:{free_port()}", timeout_s=0.5) as client:
        with pytest.raises(Unavailable):
            await client.retrieve(str(uuid.uuid4()), "refund", [str(uuid.uuid4())], 3)
        with pytest.raises(Unavailable):
            await client.ping()


async def test_ping_succeeds_while_the_memory_service_serves(memory: Memory) -> None:
    async with MemoryClient(memory.addr) as client:
        await client.ping()
