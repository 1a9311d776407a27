-- Conversations: inbound texts, AI and human replies.

-- An AI reply names the inbound text it answers; at most one per inbound text, however many
-- times its job runs.
ALTER TABLE messages ADD COLUMN in_reply_to text;
CREATE UNIQUE INDEX messages_one_ai_reply ON messages (in_reply_to) WHERE author = 'ai';

-- Which model wrote an AI reply, and its token usage.
ALTER TABLE messages ADD COLUMN model text;
ALTER TABLE messages ADD COLUMN usage jsonb;

-- An inbound text still waiting for its AI reply job to be queued (the reply outbox).
ALTER TABLE messages ADD COLUMN needs_reply boolean NOT NULL DEFAULT false;

-- The tenant's canned reply, sent when no model answers.
ALTER TABLE tenants ADD COLUMN canned_reply text;
