-- One tenant can never hurt another (issue 12).

-- Why a waiting message was put off (`circuit` or `send_rate`): one event per episode, whose
-- detail (until when) is kept current while the message keeps being put off for that reason,
-- instead of one event per deferral.
ALTER TABLE message_events ADD COLUMN put_off text;

-- The AI reply budget per contact (HERALD_AI_REPLIES_PER_HOUR): what the AI path decided for
-- each inbound text, under a lock on the contact, so concurrent reply jobs cannot overspend.
-- `kind`: `model` (a model was asked), `notice` (the budget notice was sent), `none`
-- (stored, not answered).
CREATE TABLE ai_reply_spends (
    inbound_id  text PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    contact_id  text NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL CHECK (kind IN ('model', 'notice', 'none'))
);
CREATE INDEX ai_reply_spends_contact ON ai_reply_spends (contact_id, at);
