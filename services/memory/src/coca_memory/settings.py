"""The memory service's settings (environment variables, case-insensitive)."""

from __future__ import annotations

from typing import Any

from coca_platform.settings import AmqpSettings, DatabaseSettings, PlatformSettings
from pydantic import Field, SecretStr, model_validator

MIB = 1024 * 1024
# Room for the multipart framing around the largest document, in the request body limit.
_MULTIPART_OVERHEAD = 64 * 1024


class Settings(PlatformSettings, DatabaseSettings, AmqpSettings):
    service_name: str = "memory"
    http_port: int = 8004

    # Address the gRPC server binds (0.0.0.0 in containers): coca.memory.v1.MemoryService + health.
    grpc_host: str = "127.0.0.1"
    # Port of the gRPC server; 0 picks a free one.
    grpc_port: int = Field(default=50051, ge=0, le=65535)

    # S3 / MinIO endpoint (http(s)://host:port) holding the uploaded documents.
    s3_endpoint: str = "http://127.0.0.1:9000"
    # S3 credentials (the development defaults match `make dev`'s local S3 server).
    s3_access_key: str = "coca-dev"
    s3_secret_key: SecretStr = SecretStr("coca-dev-secret")
    s3_region: str = "us-east-1"
    # Bucket of the documents, versioned, keys <tenant>/<knowledge base>/<document>/<filename>.
    s3_bucket: str = "knowledge"

    # A Milvus server (production), e.g. http://milvus:19530. Unset: milvus-lite on MILVUS_LITE_PATH.
    # (pymilvus reads MILVUS_URI itself when imported and accepts only http(s) URIs there.)
    milvus_uri: str = Field(default="", pattern=r"^(https?://.+)?$")
    # The milvus-lite database file used when MILVUS_URI is unset (dev, tests; one process per file).
    milvus_lite_path: str = ".data/milvus.db"
    # Token for a Milvus server ("user:password" or an API key).
    milvus_token: SecretStr | None = None
    # Collections of document chunks and of long-term memories.
    milvus_collection: str = "coca_chunks"
    milvus_memory_collection: str = "coca_memories"

    # Largest document accepted, in bytes (larger: 413). MAX_BODY_BYTES follows it unless set.
    max_document_bytes: int = Field(default=20 * MIB, ge=1024)
    # Target chunk size in characters; chunks end at paragraph or sentence breaks where possible.
    chunk_size: int = Field(default=800, ge=100, le=4000)
    # Characters consecutive chunks share.
    chunk_overlap: int = Field(default=100, ge=0, le=2000)
    # A document with more chunks than this fails ("too large to index") instead of tying up the indexer.
    max_document_chunks: int = Field(default=2000, ge=1)
    # Texts per forward pass of the embedding model.
    embed_batch_size: int = Field(default=8, ge=1, le=256)
    # Threads parsing and embedding documents.
    index_workers: int = Field(default=1, ge=1, le=32)
    # Threads embedding search queries and memories (apart, so indexing never holds up a search).
    query_workers: int = Field(default=1, ge=1, le=32)

    # The queue the indexer consumes, on the `document` exchange (tests use their own).
    index_queue: str = "document.index"
    # The routing key uploads publish their index messages with.
    index_routing_key: str = "index"
    # Index messages handled at once by this process.
    index_prefetch: int = Field(default=2, ge=1, le=64)
    # Attempts at indexing one document; the last failed one marks it failed with the reason.
    index_max_attempts: int = Field(default=4, ge=1, le=20)
    # Seconds before each retry of a failed indexing attempt (the last value repeats).
    index_retry_delays_s: tuple[float, ...] = (1.0, 5.0, 30.0)
    # Seconds between publishing rounds for documents whose index message RabbitMQ did not confirm.
    outbox_interval_s: float = Field(default=5.0, gt=0)

    # Longest search query, in characters.
    max_query_chars: int = Field(default=2000, ge=1)
    # Most results one search or retrieval returns.
    max_top_k: int = Field(default=50, ge=1, le=1000)
    # Longest long-term memory, in characters.
    max_memory_chars: int = Field(default=4000, ge=1, le=4000)

    @model_validator(mode="before")
    @classmethod
    def _body_fits_documents(cls, values: Any) -> Any:
        """Unless MAX_BODY_BYTES is set, the request body limit admits the largest document."""
        if isinstance(values, dict) and not any(k.lower() == "max_body_bytes" for k in values):
            size = values.get("max_document_bytes", values.get("MAX_DOCUMENT_BYTES")) or 20 * MIB
            values = {**values, "max_body_bytes": int(size) + _MULTIPART_OVERHEAD}
        return values

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("CHUNK_OVERLAP must be smaller than CHUNK_SIZE")
        return self
