-- The cap of one level: the effective limit, or the burst limit times the
-- overcommit ratio when the request allows bursting and the level has one.
CREATE OR REPLACE FUNCTION hq_cap(
    p_limit numeric, p_burst numeric, p_ratio numeric, p_allow_burst boolean
) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_allow_burst AND p_burst IS NOT NULL THEN p_burst ELSE p_limit END
           * p_ratio
$$;
