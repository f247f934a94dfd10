-- One level of a check or allocate answer. The effective limit and the cap count
-- the carry-over of the level's period (DESIGN §3a).
CREATE OR REPLACE FUNCTION hq_level(q quotas, p_requested numeric, p_allow_burst boolean)
RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'quota_id', q.id,
        'entity_type', q.entity_type,
        'entity_id', q.entity_id,
        'cap', c.cap,
        'effective_limit', (q.limit_value + q.carried_over) * q.overcommit_ratio,
        'soft_limit', q.soft_limit,
        'used', q.used,
        'available', greatest(0, c.cap - q.used),
        'allowed', hq_fits(q.used, p_requested, c.cap)
    )
      FROM (SELECT hq_cap(q.limit_value, q.burst_limit, q.overcommit_ratio,
                          p_allow_burst, q.carried_over) AS cap) c
$$;
