-- Privacy (issue 18): erasure that keeps an opted-out number suppressed, and retention.

-- The key of the keyed hash that stands for an erased number: 32 bytes from the server's
-- strong random source (two version-4 UUIDs), made once per database and never shown.
CREATE TABLE herald_keys (
    name text PRIMARY KEY,
    key bytea NOT NULL
);
INSERT INTO herald_keys (name, key)
VALUES ('number_hash', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));

CREATE FUNCTION herald_number_key() RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT key FROM herald_keys WHERE name = 'number_hash'
$$;

-- A tenant's number as a keyed hash: equal for the same tenant and number, unreadable
-- without the key, and unrelated between tenants. (Plain SQL, and STABLE like `convert_to`,
-- so the planner inlines it; a statement reads the key once with
-- `(SELECT herald_number_key())`.)
CREATE FUNCTION herald_number_hash(key bytea, tenant text, phone text) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT sha256(key || convert_to(tenant || ' ' || phone, 'UTF8'))
$$;

-- An erased contact's opt-out, kept without the number: a message to the number is still
-- suppressed, and a contact that gets the number again (created, imported, changed, or
-- texting in) starts opted out, as the erased one was.
CREATE TABLE erased_opt_outs (
    tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number_hash bytea NOT NULL,
    opted_out_at timestamptz NOT NULL,
    method text,
    PRIMARY KEY (tenant_id, number_hash)
);

CREATE FUNCTION herald_restore_opt_out() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kept erased_opt_outs;
BEGIN
    DELETE FROM erased_opt_outs
    WHERE tenant_id = NEW.tenant_id AND number_hash = herald_number_hash(herald_number_key(), NEW.tenant_id, NEW.phone)
    RETURNING * INTO kept;
    -- A consent given after the opt-out (an import or form with a newer opt-in) supersedes it,
    -- as it would have on the erased contact.
    IF FOUND AND NOT (NEW.consent_status = 'opted_in' AND NEW.consent_at > kept.opted_out_at) THEN
        NEW.opted_out := true;
        NEW.opted_out_at := kept.opted_out_at;
        NEW.consent_status := 'opted_out';
        NEW.consent_at := kept.opted_out_at;
        NEW.consent_method := kept.method;
        NEW.consent_source := 'kept through an erasure';
        NEW.consent_text := NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER contacts_restore_opt_out_on_insert BEFORE INSERT ON contacts
    FOR EACH ROW WHEN (NEW.phone IS NOT NULL) EXECUTE FUNCTION herald_restore_opt_out();
CREATE TRIGGER contacts_restore_opt_out_on_phone BEFORE UPDATE OF phone ON contacts
    FOR EACH ROW WHEN (NEW.phone IS NOT NULL AND NEW.phone IS DISTINCT FROM OLD.phone)
    EXECUTE FUNCTION herald_restore_opt_out();

-- The consent history of a restored opt-out starts with it (after the row exists, for the
-- foreign key).
CREATE FUNCTION herald_restored_consent_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO consent_events (tenant_id, contact_id, at, status, method, source)
    VALUES (NEW.tenant_id, NEW.id, NEW.consent_at, 'opted_out', NEW.consent_method, NEW.consent_source);
    RETURN NULL;
END $$;

CREATE TRIGGER contacts_restored_consent_on_insert AFTER INSERT ON contacts
    FOR EACH ROW WHEN (NEW.consent_source = 'kept through an erasure')
    EXECUTE FUNCTION herald_restored_consent_event();
CREATE TRIGGER contacts_restored_consent_on_phone AFTER UPDATE OF phone ON contacts
    FOR EACH ROW WHEN (NEW.consent_source = 'kept through an erasure'
                       AND OLD.consent_source IS DISTINCT FROM NEW.consent_source)
    EXECUTE FUNCTION herald_restored_consent_event();

-- Whether a message is about a person (their contact, or their phone or email by address):
-- what an export hands over and an erasure removes. Only an outbound message's `to_addr` is
-- theirs: an inbound text's is the tenant's own number.
CREATE FUNCTION herald_about(m messages, contact text, phone text, email text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(m.contact_id = contact, false)
        OR COALESCE(m.direction = 'outbound' AND m.channel = 'sms' AND m.to_addr = phone, false)
        OR COALESCE(m.direction = 'outbound' AND m.channel = 'email'
                    AND lower(m.to_addr) = lower(email), false)
        OR COALESCE(m.direction = 'inbound' AND m.from_addr = phone, false)
$$;

-- When a message's personal text was removed, by erasure or by retention. Its body is then
-- empty, and its subject and error texts null; statuses, times and counts stay.
ALTER TABLE messages ADD COLUMN redacted_at timestamptz;

-- Retention walks each tenant's messages in id order (ids sort by creation) from where the
-- last pass stopped...
CREATE TABLE retention_marks (
    tenant_id text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    last_id text NOT NULL
);

-- ...and keeps here the messages it passed that could not be redacted yet (still waiting
-- to be sent, or sent later than they were made), to look at again from `due_at`.
CREATE TABLE retention_deferred (
    message_id text PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    due_at timestamptz NOT NULL
);
CREATE INDEX retention_deferred_due ON retention_deferred (tenant_id, due_at);

-- Retention and erasure reach a message's dead letter by its message.
CREATE INDEX dead_letters_message ON dead_letters (message_id) WHERE message_id IS NOT NULL;
