-- A message's history without a row per step of its happy path. Claiming an attempt and
-- recording that the provider accepted it used to insert an event each, two of the three
-- rows a sent message cost. The message row now remembers them until something else happens:
-- `claimed_at` is when its current attempt was claimed (its `sending` event, "attempt N"),
-- `accepted_note` the detail of the `sent` (a webhook: `delivered`) event at `sent_at`.
-- `herald_history` reads the events and these two together, in the order they happened.
-- Whatever would make them untrue first writes them as rows: a new claim the previous
-- attempt's `sending`, a replay or redelivery both, an erasure both without their details.
ALTER TABLE messages ADD COLUMN claimed_at timestamptz, ADD COLUMN accepted_note text;

-- The events a message keeps on its row, as they read (oldest first).
CREATE FUNCTION herald_kept_events(m messages)
RETURNS TABLE (at timestamptz, status text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT m.claimed_at, 'sending', 'attempt ' || m.attempts WHERE m.claimed_at IS NOT NULL
    UNION ALL
    SELECT m.sent_at, CASE m.channel WHEN 'webhook' THEN 'delivered' ELSE 'sent' END,
           NULLIF(m.accepted_note, '')
    WHERE m.accepted_note IS NOT NULL
$$;

CREATE FUNCTION herald_history(ids text[])
RETURNS TABLE (message_id text, at timestamptz, status text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT h.message_id, h.at, h.status, h.detail FROM (
        SELECT e.message_id, e.at, e.id AS seq, e.status, e.detail
        FROM message_events e WHERE e.message_id = ANY (ids)
        UNION ALL
        SELECT m.id, k.at, NULL, k.status, k.detail
        FROM messages m CROSS JOIN LATERAL herald_kept_events(m) k
        WHERE m.id = ANY (ids)
    ) h
    ORDER BY h.message_id, h.at, h.seq NULLS LAST
$$;
