-- Two more ways businesses reach people: missed-call text-back and contact groups.

-- The text a caller gets when their call was missed, and how long before they get another.
ALTER TABLE tenants ADD COLUMN missed_call_text text;
ALTER TABLE tenants ADD COLUMN missed_call_cooldown_minutes integer NOT NULL DEFAULT 10;
-- When the contact was last texted back after a missed call (one per cooldown).
ALTER TABLE contacts ADD COLUMN last_text_back_at timestamptz;

CREATE TABLE groups (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX groups_tenant ON groups (tenant_id, id);

CREATE TABLE group_members (
    group_id    text NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    contact_id  text NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, contact_id)
);

-- One send to a whole group; each member's message names it.
CREATE TABLE group_messages (
    id               text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    group_id         text NOT NULL,
    channel          text NOT NULL,
    recipients       integer NOT NULL,
    idempotency_key  text,
    request_hash     bytea,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX group_messages_idempotency ON group_messages (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE messages ADD COLUMN group_message_id text;
CREATE INDEX messages_group_message ON messages (group_message_id) WHERE group_message_id IS NOT NULL;
