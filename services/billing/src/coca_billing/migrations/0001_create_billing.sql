-- coca_billing: plans, quotas (reservations), metered usage, a double-entry ledger, model prices.
-- Applied with search_path = coca_billing (see coca_platform.db.migrate). Money is integer micro-units
-- of the currency (1 unit = 1_000_000 micros); never floating point.

CREATE TABLE plans (
    id                   text        PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name                 text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    monthly_token_quota  bigint      NOT NULL CHECK (monthly_token_quota >= 0),
    price_micros         bigint      NOT NULL DEFAULT 0 CHECK (price_micros >= 0),
    created_at           timestamptz NOT NULL DEFAULT now()
);
-- The free plan's quota is rewritten from FREE_PLAN_MONTHLY_TOKENS when the service starts.
INSERT INTO plans (id, name, monthly_token_quota, price_micros) VALUES ('free', 'Free', 1000000, 0);

-- A tenant's plan; created the first time the tenant reserves, with the default plan.
CREATE TABLE tenant_plans (
    tenant_id   uuid        PRIMARY KEY,
    plan_id     text        NOT NULL REFERENCES plans (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Prices per 1000 tokens; the row '*' prices every model without a row of its own.
CREATE TABLE model_prices (
    model                     text        PRIMARY KEY CHECK (length(model) BETWEEN 1 AND 200),
    prompt_micros_per_1k      bigint      NOT NULL CHECK (prompt_micros_per_1k >= 0),
    completion_micros_per_1k  bigint      NOT NULL CHECK (completion_micros_per_1k >= 0),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
INSERT INTO model_prices (model, prompt_micros_per_1k, completion_micros_per_1k) VALUES
    ('*', 500, 1500),
    ('qwen2.5-1.5b-instruct', 100, 200);

-- One row per tenant and calendar month (UTC): the quota counter. Reservations lock this row, so
-- concurrent reservations of one tenant, on any replica, are decided one after the other.
CREATE TABLE quota_periods (
    tenant_id     uuid        NOT NULL,
    period_start  timestamptz NOT NULL,
    used_tokens   bigint      NOT NULL DEFAULT 0 CHECK (used_tokens >= 0),
    cost_micros   bigint      NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
    PRIMARY KEY (tenant_id, period_start)
);

-- Metered usage; event_id (the envelope id) is the dedupe key.
CREATE TABLE usage_records (
    event_id               text        PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 200),
    tenant_id              uuid        NOT NULL,
    user_id                text,
    agent_id               text,
    run_id                 text        NOT NULL,
    model                  text        NOT NULL,
    prompt_tokens          bigint      NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens      bigint      NOT NULL CHECK (completion_tokens >= 0),
    cost_micros            bigint      NOT NULL CHECK (cost_micros >= 0),
    ledger_transaction_id  uuid,
    occurred_at            timestamptz NOT NULL,
    recorded_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_tenant_occurred_idx ON usage_records (tenant_id, occurred_at);
CREATE INDEX usage_records_run_idx ON usage_records (run_id);

-- Double-entry ledger: positive amounts debit an account, negative ones credit it; the entries of one
-- transaction sum to zero (checked at commit by the constraint trigger below). Append-only.
-- Accounts: 'tenant:<id>:usage' (what the tenant owes for usage), 'revenue:usage',
-- 'tenant:<id>:credit' (prepaid credit, when payments arrive).
CREATE TABLE ledger_entries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  uuid        NOT NULL,
    tenant_id       uuid        NOT NULL,
    account         text        NOT NULL CHECK (length(account) BETWEEN 1 AND 200),
    amount_micros   bigint      NOT NULL CHECK (amount_micros <> 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_transaction_idx ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account, created_at);

CREATE FUNCTION ledger_transaction_balanced() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    total numeric;
BEGIN
    SELECT coalesce(sum(amount_micros), 0) INTO total
    FROM ledger_entries WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: its entries sum to %', NEW.transaction_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_entries_balanced
    AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_transaction_balanced();

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only: post a correcting transaction instead'
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER ledger_entries_immutable
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only();

-- Tokens held for a run until its usage arrives (settled), it fails (released) or its TTL passes
-- (expired). Only 'reserved' rows younger than expires_at count against the quota.
CREATE TABLE reservations (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL,
    run_id          text        NOT NULL UNIQUE CHECK (length(run_id) BETWEEN 1 AND 200),
    tokens          bigint      NOT NULL CHECK (tokens > 0),
    status          text        NOT NULL DEFAULT 'reserved'
                                CHECK (status IN ('reserved', 'settled', 'released', 'expired')),
    settled_tokens  bigint,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_active_idx ON reservations (tenant_id, expires_at) WHERE status = 'reserved';
CREATE INDEX reservations_due_idx ON reservations (expires_at) WHERE status = 'reserved';

-- Consumed event ids (coca_platform.kafka.PROCESSED_EVENTS_DDL), claimed in the effect's transaction.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_processed_at ON processed_events (processed_at);
