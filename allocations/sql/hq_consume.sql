-- Report a running job's consumption so far (DESIGN §3a): p_value is cumulative.
--   1. Lock the allocation row (key before quota rows, quotas/locking.py). Only an
--      active allocation of a time-based resource consumes; a value below the last
--      report is refused; the same value again changes nothing.
--   2. The increment d is charged now, to every level's current period:
--      consumed += d, reserved -= min(d, what remains of the reservation). It is
--      never refused: consumption beyond the reservation (an overrun) is charged
--      all the same and may take a level past its cap.
CREATE OR REPLACE FUNCTION hq_consume(
    p_id uuid, p_value numeric, p_lock_budget_ms integer, p_tz text,
    p_alerts numeric[]
) RETURNS json LANGUAGE plpgsql SET lock_timeout = 0 AS $$
DECLARE
    v_deadline timestamptz := hq_deadline(p_lock_budget_ms);
    v_now timestamptz := hq_now();
    v_when timestamptz;
    v_alloc allocations%ROWTYPE;
    v_delta numeric;
    v_reserve numeric;
    v_history uuid := gen_random_uuid();
    v_path uuid[];
BEGIN
    PERFORM hq_lock_budget(v_deadline);
    SELECT * INTO v_alloc FROM allocations WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN json_build_object('outcome', 'not_found');
    END IF;
    IF v_alloc.status <> 'active' THEN
        RETURN json_build_object('outcome', 'already_released',
                                 'allocation', row_to_json(v_alloc));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM resource_types
                    WHERE slug = v_alloc.resource_type AND kind = 'time_based') THEN
        RETURN json_build_object('outcome', 'not_time_based',
                                 'allocation', row_to_json(v_alloc));
    END IF;
    IF p_value < v_alloc.consumed_value THEN
        RETURN json_build_object('outcome', 'below_reported',
                                 'allocation', row_to_json(v_alloc));
    END IF;
    IF p_value = v_alloc.consumed_value THEN
        RETURN json_build_object('outcome', 'unchanged',
                                 'allocation', row_to_json(v_alloc));
    END IF;
    v_delta := p_value - v_alloc.consumed_value;
    v_reserve := least(v_delta,
                       greatest(0, v_alloc.allocated_value - v_alloc.consumed_value));

    UPDATE allocations
       SET consumed_value = p_value, version = version + 1
     WHERE id = p_id
    RETURNING * INTO v_alloc;
    INSERT INTO usage_history (id, quota_id, allocation_id, entity_type, entity_id,
                               resource_type, allocated_value, operation, job_id,
                               timestamp, metadata, consumed_delta)
    VALUES (v_history, v_alloc.quota_id, v_alloc.id, v_alloc.entity_type,
            v_alloc.entity_id, v_alloc.resource_type, v_alloc.allocated_value,
            'consume', v_alloc.job_id, v_now, v_alloc.metadata, v_delta);
    SELECT path INTO v_path FROM quotas WHERE id = v_alloc.quota_id;
    v_when := hq_charge_path(v_path, -v_reserve, v_delta, v_now, p_tz, v_deadline,
                             p_alerts);
    IF v_when <> v_now THEN
        UPDATE usage_history SET timestamp = v_when WHERE id = v_history;
    END IF;
    PERFORM hq_allocation_events(v_alloc, p_value - v_delta, false);
    RETURN json_build_object('outcome', 'consumed', 'allocation', row_to_json(v_alloc));
END
$$;
