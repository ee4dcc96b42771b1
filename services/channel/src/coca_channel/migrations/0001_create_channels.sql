-- coca_channel: channel bindings, inbound and outbound messages.
-- Applied with search_path = coca_channel (see coca_platform.db.migrate). Every query filters by tenant_id.

CREATE TABLE channels (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid        NOT NULL,
    type              text        NOT NULL CHECK (type IN ('webhook', 'telegram', 'slack', 'feishu', 'email')),
    agent_id          uuid        NOT NULL,
    config            jsonb       NOT NULL DEFAULT '{}',  -- non-secret settings (outbound_url, ...)
    secret_encrypted  text        NOT NULL,               -- signing secret / provider tokens (SecretBox)
    status            text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    created_by        uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
CREATE INDEX channels_tenant_idx ON channels (tenant_id, created_at DESC) WHERE status = 'active';

-- One row per provider message: a provider's redelivery of the same message id is accepted once.
CREATE TABLE inbound_messages (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),  -- also the published envelope's id
    tenant_id     uuid        NOT NULL,
    channel_id    uuid        NOT NULL REFERENCES channels (id),
    external_id   text        NOT NULL CHECK (length(external_id) BETWEEN 1 AND 200),
    received_at   timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,  -- NULL until channel.inbound confirmed it; a redelivery publishes again
    UNIQUE (channel_id, external_id)
);

-- One row per reply envelope (its id is the dedupe key): a redelivered reply is never sent twice.
CREATE TABLE outbound_messages (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid        NOT NULL,
    channel_id    uuid        NOT NULL REFERENCES channels (id),
    envelope_id   text        NOT NULL UNIQUE,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX outbound_messages_channel_idx ON outbound_messages (tenant_id, channel_id, created_at DESC);
