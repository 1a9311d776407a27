-- Herald's foundation schema: tenants, their API keys, contacts, messages with their
-- event history, idempotency keys, dead letters and the log provider's record of sends.
-- Postgres is the source of truth; Redis only holds the execution queue.

CREATE TABLE tenants (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    sms_from        text UNIQUE,
    email_from      text,
    -- Local wall-clock quiet window; both NULL means no quiet hours for this tenant.
    quiet_start     time,
    quiet_end       time,
    webhook_secret  text NOT NULL,
    help_text       text,
    system_prompt   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);

-- Only a SHA-256 of each key is stored; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    key_prefix   text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE contacts (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    phone        text,
    email        text,
    name         text,
    timezone     text,
    opted_out    boolean NOT NULL DEFAULT false,
    opted_out_at timestamptz,
    -- 'ai' or 'human': who answers this contact's conversation.
    mode         text NOT NULL DEFAULT 'ai',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX contacts_tenant_phone ON contacts (tenant_id, phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_tenant ON contacts (tenant_id, id);

CREATE TABLE messages (
    id                   text PRIMARY KEY,
    tenant_id            text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel              text NOT NULL CHECK (channel IN ('sms', 'email', 'webhook')),
    direction            text NOT NULL DEFAULT 'outbound' CHECK (direction IN ('inbound', 'outbound')),
    author               text NOT NULL DEFAULT 'api',
    to_addr              text NOT NULL,
    from_addr            text,
    subject              text,
    -- sms and email: the text; webhook: the JSON document, serialized.
    body                 text NOT NULL,
    status               text NOT NULL,
    send_at              timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    respect_quiet_hours  boolean NOT NULL DEFAULT true,
    contact_id           text REFERENCES contacts (id) ON DELETE SET NULL,
    metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Provider calls in the current run; a replay starts a new run at 0.
    attempts             integer NOT NULL DEFAULT 0,
    run                  integer NOT NULL DEFAULT 0,
    -- The queue attempt that holds the 'sending' claim: a job re-run after its worker
    -- died comes back with a higher attempt and may take the claim over; a duplicate
    -- job with the same attempt may not.
    claim_attempt        integer NOT NULL DEFAULT 0,
    last_error           text,
    provider_message_id  text,
    -- NULL until the delivery job is in Redis: the outbox sweep pushes what is left NULL.
    enqueued_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    delivered_at         timestamptz
);
CREATE INDEX messages_tenant_id ON messages (tenant_id, id DESC);
CREATE INDEX messages_tenant_status ON messages (tenant_id, status, id DESC);
CREATE INDEX messages_tenant_contact ON messages (tenant_id, contact_id, id DESC) WHERE contact_id IS NOT NULL;
CREATE INDEX messages_provider_id ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_outbox ON messages (created_at) WHERE enqueued_at IS NULL;

CREATE TABLE message_events (
    id          bigserial PRIMARY KEY,
    message_id  text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    status      text NOT NULL,
    detail      text
);
CREATE INDEX message_events_message ON message_events (message_id, id);

-- Idempotency-Key on POST /v1/messages: per tenant, kept 24 hours.
CREATE TABLE idempotency_keys (
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    message_id    text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- Every dead or rejected message keeps a dead letter for inspection and replay.
CREATE TABLE dead_letters (
    id           text PRIMARY KEY,
    queue        text NOT NULL,
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    message_id   text REFERENCES messages (id) ON DELETE CASCADE,
    reason       text NOT NULL CHECK (reason IN ('exhausted', 'rejected')),
    payload      jsonb NOT NULL,
    attempts     integer NOT NULL,
    errors       jsonb NOT NULL DEFAULT '[]'::jsonb,
    dead_at      timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz
);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant_id, id DESC);
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at DESC);

-- What the `log` providers "sent": the whole system runs with no provider account,
-- and ops can see what would have gone out.
CREATE TABLE log_deliveries (
    id          bigserial PRIMARY KEY,
    message_id  text NOT NULL,
    tenant_id   text NOT NULL,
    channel     text NOT NULL,
    to_addr     text NOT NULL,
    from_addr   text,
    subject     text,
    body        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX log_deliveries_message ON log_deliveries (message_id);
