-- A variant of hq_allocate for the lock-window comparison in bench_allocate.py:
-- the same work, but the quota rows are charged FIRST (leaf to root) and the
-- allocation and history rows inserted AFTER, while the root row stays locked.
-- Installed only into the benchmark's scratch database, never by a migration.
CREATE OR REPLACE FUNCTION hq_allocate(
    p_entity_type text, p_entity_id text, p_resource text, p_job uuid,
    p_requested numeric, p_allow_burst boolean, p_metadata jsonb, p_ttl integer
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    v_path uuid[];
    v_alloc allocations%ROWTYPE;
    v_row quotas%ROWTYPE;
    v_levels json[] := '{}';
    v_burst boolean := false;
    i int;
BEGIN
    SELECT path INTO v_path FROM quotas
     WHERE entity_type = p_entity_type AND entity_id = p_entity_id
       AND resource_type = p_resource;
    IF NOT FOUND THEN
        RETURN json_build_object('outcome', 'no_quota');
    END IF;
    FOR i IN 1 .. cardinality(v_path) LOOP
        UPDATE quotas q SET used = q.used + p_requested
         WHERE q.id = v_path[i]
           AND hq_fits(q.used, p_requested,
                       hq_cap(q.limit_value, q.burst_limit, q.overcommit_ratio,
                              p_allow_burst))
        RETURNING q.* INTO v_row;
        IF NOT FOUND THEN
            IF i > 1 THEN
                UPDATE quotas SET used = used - p_requested WHERE id = ANY (v_path[1:i-1]);
            END IF;
            RETURN json_build_object(
                'outcome', 'denied', 'blocking_quota_id', v_path[i],
                'levels', hq_levels(v_path, p_requested, p_allow_burst));
        END IF;
        v_burst := v_burst OR v_row.used > v_row.limit_value * v_row.overcommit_ratio;
        v_levels := v_levels || hq_level(v_row, 0, p_allow_burst);
    END LOOP;
    INSERT INTO allocations (id, quota_id, entity_type, entity_id, job_id,
                             resource_type, allocated_value, status, allocated_at,
                             expires_at, is_burst, version, metadata)
    VALUES (gen_random_uuid(), v_path[1], p_entity_type, p_entity_id, p_job,
            p_resource, p_requested, 'active', now(),
            CASE WHEN p_ttl IS NULL THEN NULL
                 ELSE now() + make_interval(secs => p_ttl) END,
            v_burst, 1, coalesce(p_metadata, '{}'::jsonb))
    ON CONFLICT (job_id, resource_type) WHERE status = 'active' DO NOTHING
    RETURNING * INTO v_alloc;
    IF NOT FOUND THEN
        UPDATE quotas SET used = used - p_requested WHERE id = ANY (v_path);
        SELECT * INTO v_alloc FROM allocations
         WHERE job_id = p_job AND resource_type = p_resource AND status = 'active';
        RETURN json_build_object('outcome', 'replayed', 'allocation', row_to_json(v_alloc));
    END IF;
    INSERT INTO usage_history (id, quota_id, allocation_id, entity_type, entity_id,
                               resource_type, allocated_value, operation, job_id,
                               timestamp, metadata)
    VALUES (gen_random_uuid(), v_path[1], v_alloc.id, p_entity_type, p_entity_id,
            p_resource, p_requested, 'allocate', p_job, now(), v_alloc.metadata);
    RETURN json_build_object('outcome', 'granted', 'allocation', row_to_json(v_alloc),
                             'levels', array_to_json(v_levels));
END
$$;
