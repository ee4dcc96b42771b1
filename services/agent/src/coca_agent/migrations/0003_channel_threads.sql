-- A chat channel's thread (e.g. a webhook sender's thread id) continues one conversation.
CREATE TABLE channel_threads (
    tenant_id        uuid        NOT NULL,
    thread_key       text        NOT NULL CHECK (length(thread_key) <= 600),
    conversation_id  uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, thread_key)
);
