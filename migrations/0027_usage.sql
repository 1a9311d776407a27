-- Usage per tenant and day (issue 20) is read from the messages themselves. A model's `usage`
-- is whatever its endpoint sent: a token count counts only when it is a whole number from 0 to
-- a trillion. (CASE tests its branches in order, so text never reaches the cast.)
CREATE FUNCTION herald_tokens(v jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v IS NULL OR jsonb_typeof(v) <> 'number' THEN NULL
        WHEN (v #>> '{}')::numeric NOT BETWEEN 0 AND 1e12 THEN NULL
        WHEN (v #>> '{}')::numeric <> trunc((v #>> '{}')::numeric) THEN NULL
        ELSE (v #>> '{}')::numeric::bigint
    END
$$;
