-- Time done right: appointments and their reminders, daily delivery at each contact's local
-- hour.

CREATE TABLE appointments (
    id             text PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    contact_id     text NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    starts_at      timestamptz NOT NULL,
    channel        text NOT NULL DEFAULT 'sms',
    body_template  text NOT NULL,
    -- The offsets asked for, e.g. {"24h", "2h"}, in the order given.
    reminders      text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    canceled_at    timestamptz
);
CREATE INDEX appointments_tenant ON appointments (tenant_id, id);

-- A reminder is a message that knows its appointment and offset.
ALTER TABLE messages ADD COLUMN appointment_id text;
ALTER TABLE messages ADD COLUMN reminder_before text;
CREATE INDEX messages_appointment ON messages (appointment_id) WHERE appointment_id IS NOT NULL;

CREATE TABLE subscriptions (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    contact_id      text NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    send_at_local   time NOT NULL,
    channel         text NOT NULL DEFAULT 'sms',
    -- 'static' (body) or 'ai' (prompt).
    content_kind    text NOT NULL CHECK (content_kind IN ('static', 'ai')),
    content         text NOT NULL,
    -- The first local date a delivery is due: the first send_at_local after creation.
    first_date      date NOT NULL,
    -- The last local date a delivery was created for, so the minute tick skips it cheaply.
    last_date       date,
    created_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX subscriptions_tenant ON subscriptions (tenant_id, id);
CREATE INDEX subscriptions_live ON subscriptions (send_at_local) WHERE deleted_at IS NULL;

-- Exactly one delivery per subscription and local date, however many schedulers run.
CREATE TABLE daily_runs (
    subscription_id  text NOT NULL,
    local_date       date NOT NULL,
    message_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, local_date)
);
ALTER TABLE messages ADD COLUMN subscription_id text;
ALTER TABLE messages ADD COLUMN local_date date;
CREATE UNIQUE INDEX messages_one_daily ON messages (subscription_id, local_date) WHERE subscription_id IS NOT NULL;
