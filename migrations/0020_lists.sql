-- Every list (issue 17, item 2): the filters' indexes, paused subscriptions, and the
-- conversations inbox.

-- A paused subscription creates no daily message until it is resumed.
ALTER TABLE subscriptions ADD COLUMN paused boolean NOT NULL DEFAULT false;

-- `GET /v1/appointments` pages by start time, soonest first.
CREATE INDEX appointments_tenant_starts ON appointments (tenant_id, starts_at, id);

-- `GET /v1/contacts?email=` matches the address whatever its case.
CREATE INDEX contacts_tenant_email ON contacts (tenant_id, lower(email)) WHERE email IS NOT NULL;

-- The inbox: each contact's latest conversation entry (an SMS message naming the contact),
-- so `GET /v1/conversations` pages by newest activity without reading every message of
-- the tenant. A narrow table of its own rather than columns on `contacts`, so a group send
-- that touches 100,000 conversations rewrites small rows and never locks a contact row.
CREATE TABLE conversation_heads (
    contact_id     text PRIMARY KEY REFERENCES contacts (id) ON DELETE CASCADE,
    tenant_id      text NOT NULL,
    -- The newest entry's id (ids sort by creation time).
    last_entry_id  text NOT NULL,
    -- Whether that entry is an inbound text: the conversation waits for a reply.
    last_inbound   boolean NOT NULL
);
CREATE INDEX conversation_heads_recent ON conversation_heads (tenant_id, last_entry_id DESC);
CREATE INDEX conversation_heads_waiting ON conversation_heads (tenant_id, last_entry_id DESC)
    WHERE last_inbound;

-- Kept by a trigger rather than by each writer: messages are inserted from many places
-- (the API, group sends, reminders, daily deliveries, inbound texts, AI and human replies),
-- and a writer added later cannot forget it. One statement per INSERT statement, however
-- many rows it wrote; heads are written in contact order, so two large concurrent sends
-- to overlapping groups take their row locks in the same order and cannot deadlock.
CREATE FUNCTION conversation_heads_advance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_heads AS h (contact_id, tenant_id, last_entry_id, last_inbound)
    SELECT contact_id, tenant_id, id, direction = 'inbound'
    FROM (
        SELECT DISTINCT ON (contact_id) contact_id, tenant_id, id, direction
        FROM inserted
        WHERE channel = 'sms' AND contact_id IS NOT NULL
        ORDER BY contact_id, id DESC
    ) latest
    ORDER BY contact_id
    ON CONFLICT (contact_id) DO UPDATE
        SET last_entry_id = EXCLUDED.last_entry_id, last_inbound = EXCLUDED.last_inbound
        WHERE h.last_entry_id < EXCLUDED.last_entry_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_advance_conversation_heads
    AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION conversation_heads_advance();

INSERT INTO conversation_heads (contact_id, tenant_id, last_entry_id, last_inbound)
SELECT DISTINCT ON (contact_id) contact_id, tenant_id, id, direction = 'inbound'
FROM messages
WHERE channel = 'sms' AND contact_id IS NOT NULL
ORDER BY contact_id, id DESC;
