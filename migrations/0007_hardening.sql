-- Hardening from an outside review (issue 13).

-- The outbox sweeps by the transaction that inserted a message, not by its id: an id is
-- minted before its transaction commits (long before, for a whole group send, or on a host
-- whose clock is behind), so an id watermark could pass a message that was not committed yet.
-- Transactions below the snapshot horizon have all finished, whatever ids they minted.
-- Finished rows keep NULL; the column is never updated afterwards, so updates of a message
-- stay HOT.
ALTER TABLE messages ADD COLUMN created_xid bigint;
ALTER TABLE messages ALTER COLUMN created_xid SET DEFAULT (pg_current_xact_id()::text::bigint);
-- Messages still waiting now were swept by id; the first sweep by transaction (from xid 0)
-- takes them once more (pushes are idempotent), so none whose push failed is left behind.
UPDATE messages SET created_xid = 0 WHERE status IN ('scheduled', 'queued', 'retrying');
CREATE INDEX messages_created_xid ON messages (created_xid);

-- The sweep's state: everything inserted by transactions below `last_xid` has been swept;
-- `next_xid` is the horizon seen at `next_at`, swept once it is old enough.
ALTER TABLE outbox_watermarks
    ADD COLUMN last_xid bigint,
    ADD COLUMN next_xid bigint,
    ADD COLUMN next_at timestamptz;

-- Dashboard sessions live on the server: a cookie carries a random id, only its hash is kept,
-- and logging out (or expiry) ends the session everywhere at once.
CREATE TABLE ops_sessions (
    id_hash     bytea PRIMARY KEY,
    csrf        text NOT NULL,
    -- the ops token's hash when it began: a new token ends every session
    token_hash  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ops_sessions_expiry ON ops_sessions (expires_at);
