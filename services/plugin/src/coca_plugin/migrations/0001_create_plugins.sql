-- Plugins a tenant registered, with their tools (a JSON array: name, description, parameters,
-- endpoint_url, method) and the endpoints' bearer secret, encrypted (never stored in plaintext).
CREATE TABLE plugins (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    description text NOT NULL,
    tools jsonb NOT NULL,
    secret_ciphertext text,
    version integer NOT NULL DEFAULT 1,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT plugins_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT plugins_tools_is_array CHECK (jsonb_typeof(tools) = 'array')
);
