-- The cap of one level: the effective limit, or the burst limit times the
-- overcommit ratio when the request allows bursting and the level has one. A
-- budget's carry-over adds to either limit for its period (DESIGN §3a).
CREATE OR REPLACE FUNCTION hq_cap(
    p_limit numeric, p_burst numeric, p_ratio numeric, p_allow_burst boolean,
    p_carried numeric
) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE WHEN p_allow_burst AND p_burst IS NOT NULL THEN p_burst
                 ELSE p_limit END
            + coalesce(p_carried, 0)) * p_ratio
$$;
