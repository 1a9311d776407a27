-- The audit log (issue 18, item 3): who changed what, from where, in which request. Rows are
-- only ever added: the triggers below refuse UPDATE, DELETE and TRUNCATE, so not even a bug in
-- Herald (or a hand-typed statement) can rewrite history. Entries outlive the tenant they are
-- about, so `tenant_id` is deliberately not a foreign key.
CREATE TABLE audit_log (
    id text PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    -- A tenant key's prefix (its first 12 characters) or `ops`.
    actor text NOT NULL,
    action text NOT NULL,
    -- The id the action is about (`ten_...`, a key prefix, `ep_...`, `dl_...`, `ct_...`), or
    -- what stands for it (`dashboard` for logins, `dead_letters` for a bulk replay).
    target text NOT NULL,
    tenant_id text,
    client_ip text,
    request_id text,
    -- What changed: field names, counts, a filter. Never a secret or a key.
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Pages are newest first by id (ids sort by time), under each filter.
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id DESC);
CREATE INDEX audit_log_action ON audit_log (action, id DESC);
CREATE INDEX audit_log_actor ON audit_log (actor, id DESC);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
