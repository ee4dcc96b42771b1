"""coca.memory.v1.MemoryService over a real gRPC channel to the port the lifespan bound."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from coca.memory.v1 import memory_pb2, memory_pb2_grpc
from coca_memory.settings import Settings
from coca_platform import rpc
from coca_platform.errors import InvalidArgument, NotFound

from .conftest import KnowledgeApi, Tenant

REFUNDS = (
    "Refunds. Customers can ask for their money back within thirty days of purchase by writing to "
    "support with the order number. The amount is returned to the original payment method within five "
    "working days. Opened software and gift cards cannot be refunded; damaged goods are refunded in full "
    "once the courier has collected them. "
) * 2
SHIPPING = (
    "Shipping. Orders leave the warehouse in Rotterdam within two working days. Parcels to the "
    "Netherlands, Belgium and Germany arrive the next day; the rest of Europe takes three to five days. "
    "Tracking links are sent by email as soon as the courier scans the parcel. "
) * 2
PASSAGES = f"{REFUNDS}\n\n{SHIPPING}"


@pytest.fixture(scope="session")
async def channel(settings: Settings, api: KnowledgeApi) -> AsyncIterator[grpc.aio.Channel]:
    async with rpc.open_channel(f"127.0.0.1:{settings.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> memory_pb2_grpc.MemoryServiceStub:
    return memory_pb2_grpc.MemoryServiceStub(channel)


async def test_health_reports_serving(channel: grpc.aio.Channel) -> None:
    await rpc.check_health(channel)
    await rpc.check_health(channel, "coca.memory.v1.MemoryService")


async def test_retrieve_returns_the_best_chunks_with_their_sources(
    api: KnowledgeApi, tenant: Tenant, stub: memory_pb2_grpc.MemoryServiceStub
) -> None:
    kb_id = await api.create_kb(tenant)
    doc = await api.indexed(tenant, kb_id, "policies.md", PASSAGES.encode())

    reply = await rpc.call(
        stub.Retrieve(
            memory_pb2.RetrieveRequest(
                tenant_id=tenant.id, query="Can I get my money back?", knowledge_base_ids=[kb_id], top_k=2
            ),
            timeout=10,
        )
    )

    assert len(reply.chunks) == 2
    best = reply.chunks[0]
    assert "refund" in best.text
    assert best.document_id == doc["id"]
    assert best.document_name == "policies.md"
    assert best.knowledge_base_id == kb_id
    assert best.chunk_id == f"{doc['id']}:{best.position}"
    assert best.score >= reply.chunks[1].score


async def test_retrieve_filters_by_document(
    api: KnowledgeApi, tenant: Tenant, stub: memory_pb2_grpc.MemoryServiceStub
) -> None:
    kb_id = await api.create_kb(tenant)
    await api.indexed(tenant, kb_id, "a.txt", PASSAGES.encode())
    other = await api.indexed(
        tenant, kb_id, "b.txt", b"Shipping to Norway takes a week longer than elsewhere."
    )

    reply = await rpc.call(
        stub.Retrieve(
            memory_pb2.RetrieveRequest(
                tenant_id=tenant.id,
                query="refund",
                knowledge_base_ids=[kb_id],
                top_k=10,
                filters={"document_id": other["id"]},
            )
        )
    )

    assert {c.document_id for c in reply.chunks} == {other["id"]}


async def test_retrieve_refuses_another_tenants_knowledge_base(
    api: KnowledgeApi, new_tenant: Callable[[], Tenant], stub: memory_pb2_grpc.MemoryServiceStub
) -> None:
    owner, other = new_tenant(), new_tenant()
    kb_id = await api.create_kb(owner)
    await api.indexed(owner, kb_id, "policies.md", PASSAGES.encode())

    with pytest.raises(NotFound):
        await rpc.call(
            stub.Retrieve(
                memory_pb2.RetrieveRequest(tenant_id=other.id, query="refund", knowledge_base_ids=[kb_id])
            )
        )


@pytest.mark.parametrize(
    "request_",
    [
        memory_pb2.RetrieveRequest(tenant_id="not-a-uuid", query="x"),
        memory_pb2.RetrieveRequest(tenant_id=str(uuid.uuid4()), query="   "),
        memory_pb2.RetrieveRequest(tenant_id=str(uuid.uuid4()), query="x", top_k=51),
        memory_pb2.RetrieveRequest(tenant_id=str(uuid.uuid4()), query="x", knowledge_base_ids=["kb"]),
        memory_pb2.RetrieveRequest(tenant_id=str(uuid.uuid4()), query="x", filters={"tenant_id": "x"}),
    ],
)
async def test_retrieve_with_bad_input_is_invalid_argument(
    stub: memory_pb2_grpc.MemoryServiceStub, request_: memory_pb2.RetrieveRequest
) -> None:
    with pytest.raises(InvalidArgument):
        await rpc.call(stub.Retrieve(request_))


async def test_long_term_memories_are_stored_found_and_deleted_per_tenant(
    new_tenant: Callable[[], Tenant], stub: memory_pb2_grpc.MemoryServiceStub
) -> None:
    tenant, other = new_tenant(), new_tenant()
    saved = await rpc.call(
        stub.UpsertMemory(
            memory_pb2.UpsertMemoryRequest(
                tenant_id=tenant.id, user_id=tenant.user_id, text="The user is allergic to peanuts."
            )
        )
    )
    await rpc.call(
        stub.UpsertMemory(
            memory_pb2.UpsertMemoryRequest(
                tenant_id=tenant.id, user_id=tenant.user_id, text="The user's favourite colour is green."
            )
        )
    )

    def ask(who: Tenant, user_id: str) -> memory_pb2.RetrieveRequest:
        return memory_pb2.RetrieveRequest(
            tenant_id=who.id, query="what food must be avoided", user_id=user_id
        )

    found = await rpc.call(stub.Retrieve(ask(tenant, tenant.user_id)))
    across = await rpc.call(stub.Retrieve(ask(other, tenant.user_id)))
    foreign_delete = await rpc.call(
        stub.DeleteMemory(memory_pb2.DeleteMemoryRequest(tenant_id=other.id, memory_id=saved.memory_id))
    )
    deleted = await rpc.call(
        stub.DeleteMemory(memory_pb2.DeleteMemoryRequest(tenant_id=tenant.id, memory_id=saved.memory_id))
    )
    again = await rpc.call(
        stub.DeleteMemory(memory_pb2.DeleteMemoryRequest(tenant_id=tenant.id, memory_id=saved.memory_id))
    )
    after = await rpc.call(stub.Retrieve(ask(tenant, tenant.user_id)))

    assert found.memories[0].memory_id == saved.memory_id
    assert "peanuts" in found.memories[0].text
    assert list(found.chunks) == []
    assert list(across.memories) == []
    assert (foreign_delete.deleted, deleted.deleted, again.deleted) == (False, True, False)
    assert [m.text for m in after.memories] == ["The user's favourite colour is green."]


async def test_upserting_a_memory_with_the_same_id_replaces_it(
    tenant: Tenant, stub: memory_pb2_grpc.MemoryServiceStub
) -> None:
    for text in ("Prefers email.", "Prefers phone calls."):
        await rpc.call(
            stub.UpsertMemory(
                memory_pb2.UpsertMemoryRequest(
                    tenant_id=tenant.id, user_id=tenant.user_id, memory_id="contact-preference", text=text
                )
            )
        )

    found = await rpc.call(
        stub.Retrieve(
            memory_pb2.RetrieveRequest(tenant_id=tenant.id, query="contact", user_id=tenant.user_id)
        )
    )

    assert [(m.memory_id, m.text) for m in found.memories] == [("contact-preference", "Prefers phone calls.")]


@pytest.mark.parametrize(
    ("user_id", "memory_id", "text"),
    [("", "", "no owner"), ("u", "", "bad user id"), (None, "", ""), (None, "has space", "bad id")],
)
async def test_upsert_memory_with_bad_input_is_invalid_argument(
    tenant: Tenant, stub: memory_pb2_grpc.MemoryServiceStub, user_id: str | None, memory_id: str, text: str
) -> None:
    request = memory_pb2.UpsertMemoryRequest(
        tenant_id=tenant.id,
        user_id=tenant.user_id if user_id is None else user_id,
        memory_id=memory_id,
        text=text,
    )

    with pytest.raises(InvalidArgument):
        await rpc.call(stub.UpsertMemory(request))
