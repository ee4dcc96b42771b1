-- coca_agent: agents, conversations, messages, runs.
-- Applied with search_path = coca_agent (see coca_platform.db.migrate). Every query filters by tenant_id.

CREATE TABLE agents (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid        NOT NULL,
    user_id             uuid        NOT NULL,  -- the owner
    name                text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    system_prompt       text        NOT NULL DEFAULT '',
    model               text,                  -- NULL: the service's LLM_MODEL
    tools               text[]      NOT NULL DEFAULT '{}',
    knowledge_base_ids  uuid[]      NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
CREATE INDEX agents_tenant_idx ON agents (tenant_id, created_at DESC) WHERE deleted_at IS NULL;

CREATE TABLE conversations (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    agent_id    uuid        NOT NULL REFERENCES agents (id),
    title       text        CHECK (length(title) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_tenant_user_idx ON conversations (tenant_id, user_id, created_at DESC);

CREATE TABLE runs (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          uuid        NOT NULL,
    conversation_id    uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    status             text        NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    error              jsonb,      -- {"code", "message"} when failed
    prompt_tokens      integer     NOT NULL DEFAULT 0,
    completion_tokens  integer     NOT NULL DEFAULT 0,
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz
);
CREATE INDEX runs_conversation_idx ON runs (tenant_id, conversation_id, started_at);

-- `seq` orders a conversation's messages (insertion order, also within one transaction).
CREATE TABLE messages (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    seq              bigserial   NOT NULL UNIQUE,
    tenant_id        uuid        NOT NULL,
    conversation_id  uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    run_id           uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    role             text        NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content          text        NOT NULL DEFAULT '',
    tool_calls       jsonb,      -- assistant: [{"id", "type": "function", "function": {"name", "arguments"}}]
    tool_call_id     text,       -- tool: the call it answers
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation_idx ON messages (tenant_id, conversation_id, seq);
