-- coca_memory: knowledge bases and their documents (chunks and vectors live in Milvus).
-- Applied with search_path = coca_memory (see coca_platform.db.migrate).

CREATE TABLE knowledge_bases (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text        NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX knowledge_bases_tenant_idx ON knowledge_bases (tenant_id, created_at DESC, id);

CREATE TABLE documents (
    id              uuid        PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    kb_id           uuid        NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    filename        text        NOT NULL CHECK (length(filename) BETWEEN 1 AND 255),
    content_type    text        NOT NULL,
    size_bytes      bigint      NOT NULL CHECK (size_bytes >= 0),
    object_key      text        NOT NULL,
    object_version  text,
    status          text        NOT NULL DEFAULT 'queued'
                                CHECK (status IN ('queued', 'processing', 'ready', 'failed')),
    error           text,
    chunk_count     integer     NOT NULL DEFAULT 0,
    -- Indexing attempts started; the last allowed one that fails marks the document failed.
    attempts        integer     NOT NULL DEFAULT 0,
    -- The transactional outbox: NULL until the document.index message was confirmed by RabbitMQ.
    published_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX documents_kb_idx ON documents (tenant_id, kb_id, created_at DESC, id);
-- Documents still to hand to RabbitMQ (few: only those accepted while it was unreachable).
CREATE INDEX documents_unpublished_idx ON documents (created_at) WHERE published_at IS NULL;
