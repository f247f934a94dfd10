-- Release or expire an active allocation: return its amount to every level, once.
-- The allocation row is claimed first (a conditional UPDATE: of two concurrent
-- releases exactly one finds it active), then the levels are updated leaf first.
-- Every lock wait of the call shares one budget (hq_lock_budget).
CREATE OR REPLACE FUNCTION hq_release(
    p_id uuid, p_status text, p_only_expired boolean, p_lock_budget_ms integer
) RETURNS json LANGUAGE plpgsql SET lock_timeout = 0 AS $$
DECLARE
    v_deadline timestamptz := hq_deadline(p_lock_budget_ms);
    v_alloc allocations%ROWTYPE;
    v_path uuid[];
    i int;
BEGIN
    PERFORM hq_lock_budget(v_deadline);
    UPDATE allocations
       SET status = p_status, released_at = now(), version = version + 1
     WHERE id = p_id AND status = 'active'
       AND (NOT p_only_expired OR expires_at <= now())
    RETURNING * INTO v_alloc;
    IF NOT FOUND THEN
        SELECT * INTO v_alloc FROM allocations WHERE id = p_id;
        IF NOT FOUND THEN
            RETURN json_build_object('outcome', 'not_found');
        END IF;
        RETURN json_build_object('outcome',
                                 CASE WHEN v_alloc.status = 'active' THEN 'not_expired'
                                      ELSE 'already_released' END,
                                 'allocation', row_to_json(v_alloc));
    END IF;
    INSERT INTO usage_history (id, quota_id, allocation_id, entity_type, entity_id,
                               resource_type, allocated_value, operation, job_id,
                               timestamp, metadata)
    VALUES (gen_random_uuid(), v_alloc.quota_id, v_alloc.id, v_alloc.entity_type,
            v_alloc.entity_id, v_alloc.resource_type, v_alloc.allocated_value,
            CASE WHEN p_status = 'expired' THEN 'expire' ELSE 'release' END,
            v_alloc.job_id, now(), v_alloc.metadata);
    SELECT path INTO v_path FROM quotas WHERE id = v_alloc.quota_id;
    FOR i IN 1 .. coalesce(cardinality(v_path), 0) LOOP
        PERFORM hq_lock_budget(v_deadline);
        UPDATE quotas SET used = used - v_alloc.allocated_value WHERE id = v_path[i];
    END LOOP;
    RETURN json_build_object('outcome', 'released', 'allocation', row_to_json(v_alloc));
END
$$;
