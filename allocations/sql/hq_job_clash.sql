-- The answer to an admission whose job already holds active allocations: the same
-- resources with the same entity and values is a replay (`replayed`, or `stale`
-- when a lease has run out, for the caller to expire them and come back); anything
-- else is a `conflict`. Allocations outside the key's scope are never named.
CREATE OR REPLACE FUNCTION hq_job_clash(
    p_held allocations[], p_entity_type text, p_entity_id text, p_resources text[],
    p_amounts numeric[], p_new uuid[], p_scope_type text, p_scope_id text
) RETURNS json LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_held allocations%ROWTYPE;
    v_inside boolean := true;
    v_same boolean;
    v_stale boolean := false;
BEGIN
    FOREACH v_held IN ARRAY p_held LOOP
        v_inside := v_inside AND hq_in_scope(
            (SELECT path FROM quotas WHERE id = v_held.quota_id),
            p_scope_type, p_scope_id);
        v_stale := v_stale
            OR (v_held.expires_at IS NOT NULL AND v_held.expires_at <= now());
    END LOOP;
    IF NOT v_inside THEN
        RETURN json_build_object('outcome', 'conflict', 'allocations', NULL);
    END IF;
    v_same := cardinality(p_new) = 0
        AND cardinality(p_held) = cardinality(p_resources)
        AND NOT EXISTS (
            SELECT 1
              FROM unnest(p_held) h
              FULL JOIN unnest(p_resources, p_amounts) AS r(resource, amount)
                ON r.resource = h.resource_type
             WHERE h.id IS NULL OR r.resource IS NULL
                OR h.allocated_value <> r.amount
                OR h.entity_type <> p_entity_type OR h.entity_id <> p_entity_id);
    RETURN json_build_object(
        'outcome', CASE WHEN v_stale THEN 'stale'
                        WHEN v_same THEN 'replayed'
                        ELSE 'conflict' END,
        'allocations', (SELECT json_agg(row_to_json(h) ORDER BY h.resource_type)
                          FROM unnest(p_held) h));
END
$$;
