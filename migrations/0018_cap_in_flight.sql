-- The frequency cap also counts a recipient's bulk messages claimed and on their way.
CREATE INDEX messages_bulk_sending ON messages (tenant_id, to_addr)
    WHERE priority = 'bulk' AND status = 'sending';
