-- Rules for bulk messages (issue 16, item 6): a bulk SMS needs the contact's consent when the
-- tenant requires it, and no contact gets more than frequency_cap_max bulk messages within
-- frequency_cap_per.
ALTER TABLE tenants
    ADD COLUMN require_consent_for_bulk boolean NOT NULL DEFAULT false,
    ADD COLUMN frequency_cap_max integer,
    ADD COLUMN frequency_cap_per interval;

-- What the cap counts: a recipient's bulk messages that went out, by when.
CREATE INDEX messages_bulk_by_recipient ON messages (tenant_id, to_addr, sent_at)
    WHERE priority = 'bulk' AND sent_at IS NOT NULL;
