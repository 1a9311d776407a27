-- Priority (issue 16, item 2, in part): 'transactional' (single messages, reminders, AI and human
-- replies) or 'bulk' (group sends and daily messages by default).
ALTER TABLE messages ADD COLUMN priority text NOT NULL DEFAULT 'transactional';
UPDATE messages SET priority = 'bulk' WHERE group_message_id IS NOT NULL OR subscription_id IS NOT NULL;
