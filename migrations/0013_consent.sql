-- Consent on record (issue 16, item 6).

-- A contact's consent to texts: 'opted_in', 'opted_out' or 'unknown', when and how it was given
-- ('web_form', 'sms_keyword', 'paper', 'verbal', 'import' or 'api'), where, and the words shown.
-- `opted_out` stays, as a boolean view of it.
ALTER TABLE contacts
    ADD COLUMN consent_status text NOT NULL DEFAULT 'unknown',
    ADD COLUMN consent_at timestamptz,
    ADD COLUMN consent_method text,
    ADD COLUMN consent_source text,
    ADD COLUMN consent_text text;

UPDATE contacts SET consent_status = 'opted_out', consent_at = opted_out_at, consent_method = 'sms_keyword'
WHERE opted_out;

-- Every change of a contact's consent, kept: what regulators ask to see.
CREATE TABLE consent_events (
    id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    contact_id text NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    at timestamptz NOT NULL,
    status text NOT NULL,
    method text,
    source text,
    text text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_events_by_contact ON consent_events (contact_id, id);

INSERT INTO consent_events (tenant_id, contact_id, at, status, method, source)
SELECT tenant_id, id, COALESCE(opted_out_at, updated_at), 'opted_out', 'sms_keyword', 'before consent was recorded'
FROM contacts WHERE opted_out;
