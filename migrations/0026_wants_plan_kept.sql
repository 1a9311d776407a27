-- `herald_wants` was a SQL function whose body holds a sub-select, so it could not be inlined
-- and Postgres parsed and planned that body again at every call; and it is called once per
-- row by `messages_event_on_status` for every message reaching a final status (most often
-- for a tenant with no endpoint at all). PL/pgSQL keeps the plans for the session, and the
-- trigger asks its question itself instead of through a second function call.
CREATE OR REPLACE FUNCTION herald_wants(tenant text, kind text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM endpoints p
                   WHERE p.tenant_id = tenant AND p.enabled AND kind = ANY (p.events));
END $$;

CREATE OR REPLACE FUNCTION herald_message_event() RETURNS trigger
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
    IF EXISTS (SELECT 1 FROM endpoints p
               WHERE p.tenant_id = NEW.tenant_id AND p.enabled AND kind = ANY (p.events)) THEN
        PERFORM herald_emit(NEW.tenant_id, kind, to_jsonb(NEW));
    END IF;
    RETURN NULL;
END $$;
