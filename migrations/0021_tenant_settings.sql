-- Tenant settings and suspension (issue 17, items 3 and 4). The AI's instructions
-- (`ai_system_prompt` in the API) stay in `system_prompt`, and `missed_call_text` exists since
-- 0005; what is new is how long bodies are kept and whether the operator suspended the tenant.

-- Days message bodies, conversation texts and dead-letter payloads are kept (used by retention).
ALTER TABLE tenants
    ADD COLUMN retention_days integer NOT NULL DEFAULT 90 CHECK (retention_days BETWEEN 1 AND 3650),
    -- A suspended tenant's keys are refused and its messages wait, without spending attempts.
    ADD COLUMN suspended boolean NOT NULL DEFAULT false;

-- Workers read the suspended tenants every second: only they are indexed.
CREATE INDEX tenants_suspended ON tenants (id) WHERE suspended;
