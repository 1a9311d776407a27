-- Event webhooks to the client (issue 17, item 1).

-- A tenant's endpoints: where its events go, which types, and the secret that signs them.
-- After a rotation the previous secret signs too, until `previous_secret_until`.
CREATE TABLE endpoints (
    id                     text PRIMARY KEY,
    tenant_id              text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                    text NOT NULL,
    events                 text[] NOT NULL,
    description            text,
    secret                 text NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    enabled                boolean NOT NULL DEFAULT true,
    disabled_reason        text,
    -- The first failed attempt since the last success (null while the last one succeeded):
    -- an endpoint failing for HERALD_ENDPOINT_DISABLE_AFTER is disabled.
    failing_since          timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, id);

-- One event: what changed, as the changed row stood then (rendered as the API shows it when
-- it is delivered). Made by the triggers below in the transaction that made the change, and
-- only when an enabled endpoint of the tenant asked for its type.
CREATE TABLE events (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One event for one endpoint. The sweep pushes the jobs of rows that transactions which
-- finished since its last step inserted (by `created_xid`, as the message outbox does), so
-- nothing has to be written to mark a row as queued.
CREATE TABLE event_deliveries (
    event_id     text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id  text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    tenant_id    text NOT NULL,
    -- 'pending' (waiting or retrying), 'delivered' or 'failed' (every retry spent, or the
    -- endpoint was disabled).
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_xid  bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX event_deliveries_created_xid ON event_deliveries (created_xid, event_id, endpoint_id);
CREATE INDEX event_deliveries_endpoint ON event_deliveries (endpoint_id, created_at);
-- A delivery is updated once or twice (its outcome); no index covers what changes, so the
-- update stays on its page (HOT) when the page has room. The reconcile, rare, walks the
-- primary key for the pending ones instead of an index of its own.
ALTER TABLE event_deliveries SET (fillfactor = 80);

-- Every call made to an endpoint.
CREATE TABLE event_attempts (
    id           text PRIMARY KEY,
    event_id     text NOT NULL,
    endpoint_id  text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    type         text NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- 'succeeded' or 'failed'
    status       text NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL
);
CREATE INDEX event_attempts_endpoint ON event_attempts (endpoint_id, id);

-- A group send is complete once none of its messages is still on its way; the scheduler
-- notes when, in the transaction that makes its `group_send.completed` event.
ALTER TABLE group_messages ADD COLUMN completed_at timestamptz;
CREATE INDEX group_messages_open ON group_messages (created_at) WHERE completed_at IS NULL;

-- Whether an enabled endpoint of `tenant` asked for events of `kind`: asked first, so a
-- tenant with none pays one index lookup per change, not the event's rendering.
CREATE FUNCTION herald_wants(tenant text, kind text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM endpoints p
                   WHERE p.tenant_id = tenant AND p.enabled AND kind = ANY (p.events))
$$;

-- Makes an event of `type` with `data` for `tenant`, and a delivery for each of its enabled
-- endpoints that asked for the type; nothing when none did. PL/pgSQL, so its statements'
-- plans are kept for the session (a SQL function's would be planned at every call).
CREATE FUNCTION herald_emit(tenant text, kind text, data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    evt text;
BEGIN
    IF NOT herald_wants(tenant, kind) THEN
        RETURN;
    END IF;
    -- Like Herald's other ids: 26 characters that sort by the time they were made.
    evt := 'evt_' || upper(lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
                                || substr(md5(random()::text || clock_timestamp()::text), 1, 14));
    INSERT INTO events (id, tenant_id, type, data) VALUES (evt, tenant, kind, data);
    INSERT INTO event_deliveries (event_id, endpoint_id, tenant_id)
    SELECT evt, p.id, tenant FROM endpoints p
    WHERE p.tenant_id = tenant AND p.enabled AND kind = ANY (p.events);
END $$;

-- message.* : an outbound message reaching a status a client wants to hear of.
CREATE FUNCTION herald_message_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    IF NEW.direction = 'inbound' THEN
        IF TG_OP <> 'INSERT' THEN
            RETURN NULL;
        END IF;
        kind := 'inbound.received';
    ELSIF NEW.status IN ('sent', 'delivered', 'failed', 'undelivered', 'dead', 'suppressed', 'expired')
          AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status) THEN
        kind := 'message.' || NEW.status;
    ELSE
        RETURN NULL;
    END IF;
    IF herald_wants(NEW.tenant_id, kind) THEN
        PERFORM herald_emit(NEW.tenant_id, kind, to_jsonb(NEW));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_event_on_insert AFTER INSERT ON messages
    FOR EACH ROW
    WHEN (NEW.direction = 'inbound'
          OR NEW.status IN ('sent', 'delivered', 'failed', 'undelivered', 'dead', 'suppressed', 'expired'))
    EXECUTE FUNCTION herald_message_event();
CREATE TRIGGER messages_event_on_status AFTER UPDATE OF status ON messages
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('sent', 'delivered', 'failed', 'undelivered', 'dead', 'suppressed', 'expired'))
    EXECUTE FUNCTION herald_message_event();

-- contact.opted_out / contact.opted_in, with the contact as it now stands (its time zone
-- spelled out: the tenant's when it has none of its own).
CREATE FUNCTION herald_contact_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text := CASE WHEN NEW.opted_out THEN 'contact.opted_out' ELSE 'contact.opted_in' END;
BEGIN
    IF herald_wants(NEW.tenant_id, kind) THEN
        PERFORM herald_emit(NEW.tenant_id, kind, to_jsonb(NEW) || jsonb_build_object('timezone',
            COALESCE(NEW.timezone, (SELECT timezone FROM tenants WHERE id = NEW.tenant_id))));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER contacts_event_on_opt_out AFTER UPDATE OF opted_out ON contacts
    FOR EACH ROW
    WHEN (OLD.opted_out IS DISTINCT FROM NEW.opted_out)
    EXECUTE FUNCTION herald_contact_event();
