-- Sends paused until the operator fixes something (issue 16, item 5).

-- One row per paused sender: a tenant's SMS sender (scope = the tenant id), or the whole
-- Twilio account (scope '*', bad credentials). While a row exists its SMS wait without spending
-- attempts; one probe goes through at probe_at, and a send that succeeds removes the row.
CREATE TABLE sender_pauses (
    scope text PRIMARY KEY,
    provider text NOT NULL,
    sender text,
    code integer NOT NULL,
    reason text NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    probes integer NOT NULL DEFAULT 0,
    probe_at timestamptz NOT NULL
);
