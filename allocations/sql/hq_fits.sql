-- The one admission predicate, shared by check and allocate (DESIGN §3).
CREATE OR REPLACE FUNCTION hq_fits(p_used numeric, p_requested numeric, p_cap numeric)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_used + p_requested <= p_cap
$$;
