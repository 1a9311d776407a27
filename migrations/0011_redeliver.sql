-- Sending an undelivered SMS once more (issue 16, item 5).

-- When an SMS a carrier reported `undelivered` with a transient code was scheduled to be sent
-- once more; set at most once per message.
ALTER TABLE messages ADD COLUMN redelivered_at timestamptz;
