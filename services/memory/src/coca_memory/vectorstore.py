"""The one adapter to Milvus: document chunks and long-term memories with their embeddings.

``open_vector_store`` takes an ``http(s)://`` URI (a Milvus server: production, ``MILVUS_URI``) or a file
path (milvus-lite: dev and tests, one process per file, ``MILVUS_LITE_PATH``).
Collections (created if missing, then loaded):

- chunks (``coca_chunks``): chunk_id (primary key, ``<document_id>:<position>``), tenant_id
  (the partition key), kb_id, document_id, position, text, embedding (384, COSINE, AUTOINDEX);
- memories (``coca_memories``): key (primary key, ``<tenant_id>:<memory_id>``), memory_id,
  tenant_id (partition key), user_id, agent_id, text, embedding.

Tenant isolation: every read, write and delete takes the tenant and filters on it; the partition key
also routes each search to the tenant's partition. Filter expressions are built only from ids that
match a strict pattern (UUIDs and the like), never from free text. pymilvus blocks, and milvus-lite
wants one caller at a time: every call runs in this store's own single-thread executor.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from coca_platform.errors import Unavailable
from pymilvus import DataType, MilvusClient, MilvusException  # type: ignore[import-untyped]

from coca_memory.models import Chunk, MemoryHit, MemoryRecord, VectorHit

log = logging.getLogger(__name__)

T = TypeVar("T")
Vectors = npt.NDArray[np.float32]

TEXT_MAX_BYTES = 16_000  # Milvus' VARCHAR limit below is 16384
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_CHUNK_FIELDS = ["chunk_id", "kb_id", "document_id", "position", "text"]


def _literal(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"not an id usable in a Milvus filter: {value!r}")
    return f'"{value}"'


def _in(field: str, values: Iterable[str]) -> str:
    return f"{field} in [{', '.join(_literal(v) for v in values)}]"


def _bounded(text: str) -> str:
    encoded = text.encode("utf-8")
    return text if len(encoded) <= TEXT_MAX_BYTES else encoded[:TEXT_MAX_BYTES].decode("utf-8", "ignore")


@dataclass(frozen=True, slots=True)
class Collections:
    chunks: str = "coca_chunks"
    memories: str = "coca_memories"


class VectorStore:
    def __init__(self, client: MilvusClient, names: Collections, executor: ThreadPoolExecutor) -> None:
        self._client, self._names, self._executor = client, names, executor

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except MilvusException as exc:
            raise Unavailable(f"Milvus failed: {exc.message}") from exc

    async def ping(self) -> None:
        await self._run(lambda: self._client.has_collection(self._names.chunks))

    # --- chunks ---------------------------------------------------------------------------------

    async def replace_document(
        self, tenant_id: str, document_id: str, chunks: Sequence[Chunk], vectors: Vectors
    ) -> None:
        """Make the document's chunks exactly ``chunks``: drop what an earlier attempt left, then upsert."""
        rows = [
            {
                "chunk_id": c.chunk_id,
                "tenant_id": c.tenant_id,
                "kb_id": c.kb_id,
                "document_id": c.document_id,
                "position": c.position,
                "text": _bounded(c.text),
                "embedding": vector.tolist(),
            }
            for c, vector in zip(chunks, vectors, strict=True)
        ]
        where = f"tenant_id == {_literal(tenant_id)} and document_id == {_literal(document_id)}"

        def replace() -> None:
            self._client.delete(self._names.chunks, filter=where)
            for start in range(0, len(rows), 500):
                self._client.upsert(self._names.chunks, rows[start : start + 500])

        await self._run(replace)

    async def search_chunks(
        self,
        tenant_id: str,
        vector: Vectors,
        *,
        kb_ids: Sequence[str],
        top_k: int,
        document_ids: Sequence[str] = (),
    ) -> list[VectorHit]:
        if not kb_ids:
            return []
        where = f"tenant_id == {_literal(tenant_id)} and {_in('kb_id', kb_ids)}"
        if document_ids:
            where += f" and {_in('document_id', document_ids)}"
        found = await self._run(lambda: self._search(self._names.chunks, vector, where, top_k, _CHUNK_FIELDS))
        return [
            VectorHit(
                chunk_id=str(e["chunk_id"]),
                kb_id=str(e["kb_id"]),
                document_id=str(e["document_id"]),
                position=int(e["position"]),
                text=str(e["text"]),
                score=score,
            )
            for e, score in found
        ]

    async def count_chunks(self, tenant_id: str, document_id: str) -> int:
        where = f"tenant_id == {_literal(tenant_id)} and document_id == {_literal(document_id)}"

        def count() -> int:
            rows = self._client.query(self._names.chunks, filter=where, output_fields=["count(*)"])
            return int(rows[0]["count(*)"]) if rows else 0

        return await self._run(count)

    # --- memories -------------------------------------------------------------------------------

    async def upsert_memory(self, memory: MemoryRecord, vector: Vectors) -> None:
        # The primary key includes the tenant: one tenant's id can never overwrite another's memory.
        _literal(memory.memory_id)
        row = {
            "key": f"{memory.tenant_id}:{memory.memory_id}",
            "memory_id": memory.memory_id,
            "tenant_id": memory.tenant_id,
            "user_id": memory.user_id,
            "agent_id": memory.agent_id,
            "text": _bounded(memory.text),
            "embedding": vector.tolist(),
        }
        await self._run(lambda: self._client.upsert(self._names.memories, [row]))

    async def delete_memory(self, tenant_id: str, memory_id: str) -> bool:
        where = f"tenant_id == {_literal(tenant_id)} and memory_id == {_literal(memory_id)}"

        def delete() -> bool:
            if not self._client.query(self._names.memories, filter=where, output_fields=["memory_id"]):
                return False
            self._client.delete(self._names.memories, filter=where)
            return True

        return await self._run(delete)

    async def search_memories(
        self, tenant_id: str, user_id: str, vector: Vectors, top_k: int
    ) -> list[MemoryHit]:
        where = f"tenant_id == {_literal(tenant_id)} and user_id == {_literal(user_id)}"
        found = await self._run(
            lambda: self._search(self._names.memories, vector, where, top_k, ["memory_id", "text"])
        )
        return [MemoryHit(str(e["memory_id"]), str(e["text"]), score) for e, score in found]

    def _search(
        self, collection: str, vector: Vectors, where: str, top_k: int, fields: list[str]
    ) -> list[tuple[dict[str, Any], float]]:
        result = self._client.search(
            collection,
            data=[vector.tolist()],
            filter=where,
            limit=top_k,
            output_fields=fields,
            search_params={"metric_type": "COSINE"},
        )
        return [(dict(hit["entity"]), float(hit["distance"])) for hit in result[0]]


def _chunk_schema(dimensions: int) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("tenant_id", DataType.VARCHAR, max_length=64, is_partition_key=True)
    schema.add_field("kb_id", DataType.VARCHAR, max_length=64)
    schema.add_field("document_id", DataType.VARCHAR, max_length=64)
    schema.add_field("position", DataType.INT32)
    schema.add_field("text", DataType.VARCHAR, max_length=16_384)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dimensions)
    return schema


def _memory_schema(dimensions: int) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=200)
    schema.add_field("memory_id", DataType.VARCHAR, max_length=128)
    schema.add_field("tenant_id", DataType.VARCHAR, max_length=64, is_partition_key=True)
    schema.add_field("user_id", DataType.VARCHAR, max_length=64)
    schema.add_field("agent_id", DataType.VARCHAR, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=16_384)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dimensions)
    return schema


def _connect(uri: str, token: str | None) -> MilvusClient:
    if uri.startswith(("http://", "https://")):
        return MilvusClient(uri=uri, token=token or "")
    path = Path(uri).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return MilvusClient(str(path))  # milvus-lite: a local server process for this file


def _prepare(client: MilvusClient, names: Collections, dimensions: int) -> None:
    for name, schema in (
        (names.chunks, _chunk_schema(dimensions)),
        (names.memories, _memory_schema(dimensions)),
    ):
        if not client.has_collection(name):
            # Strong: a document reported ready is searchable at once, from every replica.
            client.create_collection(name, schema=schema, consistency_level="Strong")
            index = client.prepare_index_params()
            index.add_index(field_name="embedding", index_type="AUTOINDEX", metric_type="COSINE")
            # Not waiting for the build: the collection is empty, and milvus-lite cannot report progress.
            client.create_index(name, index, sync=False)
            log.info("milvus collection created", extra={"data": {"collection": name}})
        client.load_collection(name)  # a reopened milvus-lite file needs it; a no-op when loaded


@asynccontextmanager
async def open_vector_store(
    uri: str, *, token: str | None = None, names: Collections | None = None, dimensions: int = 384
) -> AsyncIterator[VectorStore]:
    """Connect (milvus-lite for a path, a server for an http(s) URI), create and load the collections."""
    names = names or Collections()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coca-milvus")
    loop = asyncio.get_running_loop()
    try:
        try:
            client = await loop.run_in_executor(executor, _connect, uri, token)
            await loop.run_in_executor(executor, _prepare, client, names, dimensions)
        except MilvusException as exc:
            raise Unavailable(f"cannot open Milvus at {uri!r}: {exc.message}") from exc
        try:
            yield VectorStore(client, names, executor)
        finally:
            await loop.run_in_executor(executor, client.close)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
