-- Check: the allocate predicate, evaluated without writing, on the levels as
-- allocate would find them. An entity outside the key's scope (p_scope_type,
-- p_scope_id; null for none) is answered as if it had no quota.
CREATE OR REPLACE FUNCTION hq_check(
    p_entity_type text, p_entity_id text, p_resource text,
    p_requested numeric, p_allow_burst boolean,
    p_scope_type text, p_scope_id text, p_tz text
) RETURNS json LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_path uuid[];
BEGIN
    SELECT path INTO v_path FROM quotas
     WHERE entity_type = p_entity_type AND entity_id = p_entity_id
       AND resource_type = p_resource;
    IF NOT FOUND OR NOT hq_in_scope(v_path, p_scope_type, p_scope_id) THEN
        RETURN json_build_object('outcome', 'no_quota');
    END IF;
    RETURN json_build_object(
        'outcome', 'checked',
        'levels', hq_levels(v_path, p_requested, p_allow_burst, hq_now(), p_tz));
END
$$;
