-- Whether a path (leaf first) runs through a quota of the scope entity: the one
-- test of "inside a key's scope" the engine applies (quotas/access/scoping.py says
-- the same in Python). A null scope type is an unscoped key: everything is inside.
-- A path of a quota that no longer exists is null: outside every scope.
CREATE OR REPLACE FUNCTION hq_in_scope(p_path uuid[], p_scope_type text, p_scope_id text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_scope_type IS NULL
        OR EXISTS (SELECT 1 FROM quotas
                    WHERE id = ANY (p_path)
                      AND entity_type = p_scope_type AND entity_id = p_scope_id)
$$;
