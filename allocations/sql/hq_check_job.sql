-- Check a job's admission without writing: every resource's levels as admission
-- would find them (the caller reads the predicate off the `allowed` flags). A
-- resource without a quota, or outside the key's scope, is `no_quota`.
CREATE OR REPLACE FUNCTION hq_check_job(
    p_entity_type text, p_entity_id text, p_resources jsonb, p_allow_burst boolean,
    p_scope_type text, p_scope_id text, p_tz text
) RETURNS json LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_resources text[];
    v_amounts numeric[];
    v_leaves uuid[] := '{}';
    v_path uuid[];
    i int;
BEGIN
    SELECT array_agg(key ORDER BY key), array_agg(value::numeric ORDER BY key)
      INTO v_resources, v_amounts
      FROM jsonb_each_text(p_resources);
    FOR i IN 1 .. cardinality(v_resources) LOOP
        SELECT path INTO v_path FROM quotas
         WHERE entity_type = p_entity_type AND entity_id = p_entity_id
           AND resource_type = v_resources[i];
        IF NOT FOUND OR NOT hq_in_scope(v_path, p_scope_type, p_scope_id) THEN
            RETURN json_build_object('outcome', 'no_quota',
                                     'resource_type', v_resources[i]);
        END IF;
        v_leaves := v_leaves || v_path[1];
    END LOOP;
    RETURN json_build_object(
        'outcome', 'checked',
        'levels', hq_job_levels(v_resources, v_amounts, v_leaves, p_allow_burst,
                                hq_now(), p_tz));
END
$$;
