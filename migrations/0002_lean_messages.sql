-- Keep the hot path cheap: a message is updated twice per attempt (claimed, then its
-- outcome), and an update that touches no indexed column is a HOT update that leaves the
-- indexes alone. So status, provider ids and the outbox marker leave the indexes of
-- `messages`, and its pages keep room for HOT updates.

-- Listing by status walks the tenant's messages newest first and filters.
DROP INDEX messages_tenant_status;

-- Provider ids are looked up (status callbacks) through their own insert-only table.
DROP INDEX messages_provider_id;
CREATE TABLE provider_refs (
    provider_message_id  text PRIMARY KEY,
    message_id           text NOT NULL
);

-- The outbox sweep follows a watermark over message ids (they sort by creation time)
-- instead of a per-message "enqueued" marker that every message had to be updated for.
DROP INDEX messages_outbox;
ALTER TABLE messages DROP COLUMN enqueued_at;
CREATE TABLE outbox_watermarks (
    name     text PRIMARY KEY,
    last_id  text NOT NULL
);

ALTER TABLE messages SET (fillfactor = 80);
