"""What the memory service holds while it runs, opened and closed by the lifespan in ``app.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aio_pika.abc import AbstractRobustConnection
from coca_platform import amqp
from coca_platform.db import Pool, create_pool

from coca_memory.embedder import Embedder, EmbeddingRunner
from coca_memory.indexing import DocumentIndexer, IndexLimits
from coca_memory.objectstore import ObjectStore, open_object_store
from coca_memory.outbox import EXCHANGE, IndexRequests
from coca_memory.retrieval import RetrievalLimits, RetrievalService
from coca_memory.service import KnowledgeService
from coca_memory.settings import Settings
from coca_memory.vectorstore import Collections, VectorStore, open_vector_store


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    pool: Pool
    store: ObjectStore
    vectors: VectorStore
    amqp: AbstractRobustConnection
    requests: IndexRequests
    queries: EmbeddingRunner  # embeds search queries and memories, on its own threads
    indexer: DocumentIndexer

    @asynccontextmanager
    async def knowledge(self) -> AsyncIterator[KnowledgeService]:
        async with self.pool.acquire() as conn:
            yield KnowledgeService(
                conn, self.store, self.requests, max_document_bytes=self.settings.max_document_bytes
            )

    @asynccontextmanager
    async def retrieval(self) -> AsyncIterator[RetrievalService]:
        s = self.settings
        limits = RetrievalLimits(s.max_query_chars, s.max_top_k, s.max_memory_chars)
        async with self.pool.acquire() as conn:
            yield RetrievalService(conn, self.vectors, self.queries, limits)


async def _declare_index_queue(connection: AbstractRobustConnection, settings: Settings) -> None:
    """The ``document`` exchange and the index queue (with its dead-letter queue). Idempotent."""
    spec = amqp.QueueSpec(
        settings.index_queue,
        (amqp.BindingSpec(EXCHANGE, settings.index_routing_key),),
        retry_delays_s=settings.index_retry_delays_s,
    )
    channel = await connection.channel()
    try:
        await amqp.declare_exchange(channel, amqp.ExchangeSpec(amqp.DLX, "direct"))
        await amqp.declare_exchange(channel, amqp.ExchangeSpec(EXCHANGE, "direct"))
        await amqp.declare_queue(channel, spec)
    finally:
        await channel.close()


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        # Parsing and embedding documents, and embedding queries: CPU-bound, each on bounded threads.
        index_executor = ThreadPoolExecutor(settings.index_workers, thread_name_prefix="coca-index")
        stack.callback(index_executor.shutdown, wait=True, cancel_futures=True)
        query_executor = ThreadPoolExecutor(settings.query_workers, thread_name_prefix="coca-query")
        stack.callback(query_executor.shutdown, wait=True, cancel_futures=True)
        loop = asyncio.get_running_loop()
        embedder = await loop.run_in_executor(
            index_executor, lambda: Embedder.load(batch_size=settings.embed_batch_size)
        )
        pool = await stack.enter_async_context(
            create_pool(
                settings.database_url,
                schema="coca_memory",
                application_name="coca-memory",
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            )
        )
        store = await stack.enter_async_context(
            open_object_store(
                settings.s3_endpoint,
                settings.s3_access_key,
                settings.s3_secret_key.get_secret_value(),
                region=settings.s3_region,
                bucket=settings.s3_bucket,
            )
        )
        vectors = await stack.enter_async_context(
            open_vector_store(
                settings.milvus_uri or settings.milvus_lite_path,
                token=settings.milvus_token.get_secret_value() if settings.milvus_token else None,
                names=Collections(settings.milvus_collection, settings.milvus_memory_collection),
                dimensions=embedder.dimensions,
            )
        )
        connection = await amqp.open_connection(settings.amqp_url, name="coca-memory")
        stack.push_async_callback(connection.close)
        await _declare_index_queue(connection, settings)
        publisher = await stack.enter_async_context(amqp.open_publisher(connection, app_id="coca-memory"))
        limits = IndexLimits(
            settings.chunk_size,
            settings.chunk_overlap,
            settings.max_document_chunks,
            settings.index_max_attempts,
        )
        indexer = DocumentIndexer(
            pool, store, vectors, EmbeddingRunner(embedder, index_executor), index_executor, limits
        )
        queries = EmbeddingRunner(embedder, query_executor)
        requests = IndexRequests(publisher, settings.index_routing_key)
        yield Resources(settings, pool, store, vectors, connection, requests, queries, indexer)
