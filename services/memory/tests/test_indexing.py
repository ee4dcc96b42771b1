"""The document.index worker under redelivery, duplicates and a lost publish (the outbox)."""

from __future__ import annotations

import asyncio
import io
import uuid

import asyncpg
from coca_memory.settings import Settings
from coca_platform.amqp import open_publisher
from coca_platform.envelope import new_envelope
from minio import Minio

from .conftest import KnowledgeApi, Tenant

TEXT = (
    "Backups. The database is backed up every night at two o'clock and kept for thirty days.\n\n"
    "Deployments. Releases go out on Tuesdays after the change review; hotfixes need two approvals.\n\n"
) * 6


async def publish_index(settings: Settings, tenant_id: str, document_id: str) -> None:
    """What a redelivery (or a duplicate publish) looks like to the worker."""
    message = new_envelope(
        "document.index",
        source="memory-tests",
        tenant_id=tenant_id,
        subject=document_id,
        data={"document_id": document_id},
    )
    async with open_publisher(settings.amqp_url, app_id="memory-tests") as publisher:
        await publisher.publish("document", settings.index_routing_key, message)


async def chunk_ids(api: KnowledgeApi, tenant: Tenant, kb_id: str, doc_id: str) -> list[str]:
    """The ids of every chunk of the document that a search can find (all of them: top_k is above)."""
    items = (await api.search(tenant, kb_id, "when are backups made", top_k=50)).json()["items"]
    return sorted(item["chunk_id"] for item in items if item["document_id"] == doc_id)


async def wait_for(
    db: asyncpg.Connection, doc_id: str, status: str, attempts: int, timeout_s: float = 30
) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            row = await db.fetchrow("SELECT status, attempts FROM documents WHERE id = $1::uuid", doc_id)
            if row["status"] == status and row["attempts"] == attempts:
                return
            await asyncio.sleep(0.05)


async def test_redelivered_message_for_a_ready_document_changes_nothing(
    api: KnowledgeApi, tenant: Tenant, settings: Settings, db: asyncpg.Connection
) -> None:
    kb_id = await api.create_kb(tenant)
    doc = await api.indexed(tenant, kb_id, "ops.txt", TEXT.encode())
    before = await chunk_ids(api, tenant, kb_id, doc["id"])

    await publish_index(settings, tenant.id, doc["id"])
    # A later upload is indexed after the redelivered message was taken off the queue.
    await api.indexed(tenant, kb_id, "later.txt", b"A later document about something else entirely.")
    await asyncio.sleep(0.3)

    after = await api.document(tenant, kb_id, doc["id"])
    assert after == doc  # same status, chunk count and updated_at
    attempts = await db.fetchval("SELECT attempts FROM documents WHERE id = $1::uuid", doc["id"])
    assert attempts == 1
    assert await chunk_ids(api, tenant, kb_id, doc["id"]) == before
    assert len(before) == doc["chunk_count"]


async def test_redelivery_after_an_interrupted_attempt_indexes_without_duplicates(
    api: KnowledgeApi, tenant: Tenant, settings: Settings, db: asyncpg.Connection
) -> None:
    kb_id = await api.create_kb(tenant)
    doc = await api.indexed(tenant, kb_id, "ops.txt", TEXT.encode())
    # As if the worker died after writing the vectors but before marking the document ready.
    await db.execute("UPDATE documents SET status = 'processing' WHERE id = $1::uuid", doc["id"])

    await publish_index(settings, tenant.id, doc["id"])
    await wait_for(db, doc["id"], "ready", attempts=2)

    again = await api.document(tenant, kb_id, doc["id"])
    assert again["chunk_count"] == doc["chunk_count"]
    ids = await chunk_ids(api, tenant, kb_id, doc["id"])
    assert ids == sorted(f"{doc['id']}:{n}" for n in range(doc["chunk_count"]))


async def test_index_message_for_another_tenant_does_nothing(
    api: KnowledgeApi, tenant: Tenant, settings: Settings, db: asyncpg.Connection
) -> None:
    kb_id = await api.create_kb(tenant)
    response = await api.upload(tenant, kb_id, "empty.txt", b"")
    doc = await api.settled(tenant, kb_id, response.json()["id"])

    await publish_index(settings, str(uuid.uuid4()), doc["id"])
    await api.indexed(tenant, kb_id, "later.txt", b"Something to index after the forged message.")

    assert await api.document(tenant, kb_id, doc["id"]) == doc
    assert await db.fetchval("SELECT attempts FROM documents WHERE id = $1::uuid", doc["id"]) == 1


async def test_document_whose_message_was_never_published_is_indexed_by_the_outbox(
    api: KnowledgeApi, tenant: Tenant, settings: Settings, db: asyncpg.Connection
) -> None:
    """The process died between writing the row and publishing: the relay publishes it later."""
    kb_id = await api.create_kb(tenant)
    doc_id = str(uuid.uuid4())
    key = f"{tenant.id}/{kb_id}/{doc_id}/recovered.txt"
    endpoint = settings.s3_endpoint.removeprefix("http://")
    s3 = Minio(endpoint, access_key="test", secret_key="test", secure=False, region="us-east-1")
    written = await asyncio.to_thread(
        s3.put_object, settings.s3_bucket, key, io.BytesIO(TEXT.encode()), len(TEXT.encode()), "text/plain"
    )
    await db.execute(
        "INSERT INTO documents (id, tenant_id, kb_id, filename, content_type, size_bytes, object_key,"
        " object_version, created_at) VALUES ($1::uuid, $2::uuid, $3::uuid, 'recovered.txt', 'text/plain',"
        " $4, $5, $6, now() - interval '1 minute')",
        doc_id,
        tenant.id,
        kb_id,
        len(TEXT.encode()),
        key,
        written.version_id,
    )

    doc = await api.settled(tenant, kb_id, doc_id, timeout_s=30)

    assert doc["status"] == "ready", doc
    assert doc["chunk_count"] > 0
    assert await db.fetchval("SELECT published_at IS NOT NULL FROM documents WHERE id = $1::uuid", doc_id)


async def test_document_whose_file_vanished_from_storage_ends_failed(
    api: KnowledgeApi, tenant: Tenant, db: asyncpg.Connection
) -> None:
    kb_id = await api.create_kb(tenant)
    doc_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO documents (id, tenant_id, kb_id, filename, content_type, size_bytes, object_key,"
        " created_at) VALUES ($1::uuid, $2::uuid, $3::uuid, 'gone.txt', 'text/plain', 10, $4,"
        " now() - interval '1 minute')",
        doc_id,
        tenant.id,
        kb_id,
        f"{tenant.id}/{kb_id}/{doc_id}/gone.txt",
    )

    doc = await api.settled(tenant, kb_id, doc_id, timeout_s=30)

    assert doc["status"] == "failed"
    assert doc["error"] == "the uploaded file is no longer in storage"
