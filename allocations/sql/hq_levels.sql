-- Every level of a path as it stands now (no locks), leaf first, each as allocate
-- would find it: a level whose period has ended is seen rolled over (hq_rolled).
CREATE OR REPLACE FUNCTION hq_levels(
    p_path uuid[], p_requested numeric, p_allow_burst boolean, p_now timestamptz,
    p_tz text
) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT coalesce(
               json_agg(hq_level(hq_rolled(q, p_now, p_tz), p_requested, p_allow_burst)
                        ORDER BY p.ord),
               '[]'::json)
      FROM unnest(p_path) WITH ORDINALITY AS p(id, ord)
      JOIN quotas q ON q.id = p.id
$$;
