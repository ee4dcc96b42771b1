"""Fixtures for the memory service's tests: real PostgreSQL, RabbitMQ and S3 (moto) from ``infra``,
milvus-lite in a temporary directory, the real all-MiniLM-L6-v2 model; the app in-process.

The session uses its own index queue and routing key (deleted at the end), so parallel test runs and
a running ``make dev`` never take each other's ``document.index`` messages.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from coca_memory.app import create_app
from coca_memory.settings import Settings
from coca_platform.identity import Identity
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client, free_port, migrate_for_tests, schema_connection, signed_headers

MAX_DOCUMENT_BYTES = 256 * 1024


def make_settings(infra: LocalInfra, milvus_dir: Path, **overrides: Any) -> Settings:
    queue = f"document.index.test-{uuid.uuid4().hex[:12]}"
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": infra.database_url,
        "amqp_url": infra.amqp_url,
        "s3_endpoint": infra.s3_endpoint,
        "milvus_lite_path": str(milvus_dir / "milvus.db"),
        "grpc_port": free_port(),
        "index_queue": queue,
        "index_routing_key": queue,
        "index_retry_delays_s": (0.2, 0.5),
        "outbox_interval_s": 0.5,
        "max_document_bytes": MAX_DOCUMENT_BYTES,
        "db_pool_max": 4,
    }
    return Settings(**(values | overrides))


async def delete_queues(amqp_url: str, settings: Settings) -> None:
    """Remove a test session's index queue, its dead-letter queue and its delay queues."""
    from coca_platform.amqp import retry_queue_name

    names = [settings.index_queue, f"{settings.index_queue}.dlq"]
    names += [retry_queue_name(settings.index_queue, d) for d in settings.index_retry_delays_s]
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def migrated(infra: LocalInfra) -> LocalInfra:
    await migrate_for_tests(infra.database_url, schema="coca_memory", package="coca_memory")
    return infra


@pytest.fixture(scope="session")
async def settings(migrated: LocalInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    made = make_settings(migrated, tmp_path_factory.mktemp("milvus"))
    yield made
    await delete_queues(migrated.amqp_url, made)


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings)) as http:
        yield http


@pytest.fixture(scope="session")
async def db(migrated: LocalInfra) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, to look at (and set up) rows the service wrote."""
    async with schema_connection(migrated.database_url, "coca_memory") as conn:
        yield conn


@dataclass
class Tenant:
    """A tenant with a member; ``headers()`` signs an identity inside it, as the gateway would."""

    secret: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def headers(self) -> dict[str, str]:
        return signed_headers(Identity(tenant_id=self.id, user_id=self.user_id), self.secret)


@pytest.fixture
def new_tenant(settings: Settings) -> Callable[[], Tenant]:
    return lambda: Tenant(settings.internal_secret.get_secret_value())


@pytest.fixture
def tenant(new_tenant: Callable[[], Tenant]) -> Tenant:
    return new_tenant()


class KnowledgeApi:
    """The memory service's HTTP API, called as the gateway would."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def create_kb(self, tenant: Tenant, name: str = "handbook") -> str:
        response = await self.http.post("/v1/knowledge-bases", json={"name": name}, headers=tenant.headers())
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def upload(
        self, tenant: Tenant, kb_id: str, filename: str, content: bytes, content_type: str = "text/plain"
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/knowledge-bases/{kb_id}/documents",
            files={"file": (filename, content, content_type)},
            headers=tenant.headers(),
        )

    async def document(self, tenant: Tenant, kb_id: str, doc_id: str) -> dict[str, Any]:
        response = await self.http.get(
            f"/v1/knowledge-bases/{kb_id}/documents/{doc_id}", headers=tenant.headers()
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def settled(self, tenant: Tenant, kb_id: str, doc_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """The document once it is ``ready`` or ``failed``."""
        async with asyncio.timeout(timeout_s):
            while True:
                doc = await self.document(tenant, kb_id, doc_id)
                if doc["status"] in ("ready", "failed"):
                    return doc
                await asyncio.sleep(0.1)

    async def indexed(self, tenant: Tenant, kb_id: str, filename: str, content: bytes) -> dict[str, Any]:
        """Upload a document and wait until it is indexed (it must become ``ready``)."""
        response = await self.upload(tenant, kb_id, filename, content)
        assert response.status_code == 202, response.text
        doc = await self.settled(tenant, kb_id, response.json()["id"])
        assert doc["status"] == "ready", doc
        return doc

    async def search(self, tenant: Tenant, kb_id: str, query: str, top_k: int = 5) -> httpx.Response:
        return await self.http.post(
            f"/v1/knowledge-bases/{kb_id}/search",
            json={"query": query, "top_k": top_k},
            headers=tenant.headers(),
        )


@pytest.fixture(scope="session")
def api(client: httpx.AsyncClient) -> KnowledgeApi:
    return KnowledgeApi(client)


def build_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF: one page per entry, each line drawn in Helvetica, streams compressed."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]  # the page tree comes once pages exist
    font = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    for lines in pages:
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops += [f"({escaped}) Tj", "T*"]
        ops.append("ET")
        stream = zlib.compress("\n".join(ops).encode("latin-1"))
        objects.append(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"
        )
        content = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >>"
            b" /Contents %d 0 R >>" % (font, content)
        )
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture(scope="session")
def make_pdf() -> Callable[[list[list[str]]], bytes]:
    return build_pdf
