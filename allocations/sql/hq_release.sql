-- Release or expire an active allocation, exactly once (DESIGN §3, §3a).
--   1. Lock the allocation row (of two concurrent releases the second waits, then
--      finds it released) and decide: a concurrent resource gives its amount back;
--      a time-based one settles: the final consumption is p_consumed when given
--      (never below what was reported), else rate × hours held when it has a rate,
--      else the whole reservation. The last increment is charged and what remains
--      of the reservation returned.
--   2. Record the release and its history row (with the amount it charged).
--   3. Charge every level, leaf first (hq_charge_path): consumed += the increment,
--      reserved -= the rest of the reservation.
-- Every lock wait of the call shares one budget (hq_lock_budget).
CREATE OR REPLACE FUNCTION hq_release(
    p_id uuid, p_status text, p_only_expired boolean, p_consumed numeric,
    p_lock_budget_ms integer, p_tz text, p_alerts numeric[]
) RETURNS json LANGUAGE plpgsql SET lock_timeout = 0 AS $$
DECLARE
    v_deadline timestamptz := hq_deadline(p_lock_budget_ms);
    v_now timestamptz := hq_now();
    v_when timestamptz;
    v_alloc allocations%ROWTYPE;
    v_settle record;
    v_final numeric;
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
    IF p_only_expired AND NOT coalesce(v_alloc.expires_at <= now(), false) THEN
        RETURN json_build_object('outcome', 'not_expired',
                                 'allocation', row_to_json(v_alloc));
    END IF;
    SELECT * INTO v_settle FROM hq_settle_value(v_alloc, p_consumed, v_now);
    IF v_settle.outcome IS NOT NULL THEN
        RETURN json_build_object('outcome', v_settle.outcome,
                                 'allocation', row_to_json(v_alloc));
    END IF;
    v_final := v_settle.final;

    -- What the settle charges (the last increment) and what the allocation still
    -- held in reserve (all of it returns: the charged part as consumption).
    v_delta := v_final - v_alloc.consumed_value;
    v_reserve := greatest(0, v_alloc.allocated_value - v_alloc.consumed_value);

    UPDATE allocations
       SET status = p_status, released_at = now(), version = version + 1,
           consumed_value = v_final
     WHERE id = p_id
    RETURNING * INTO v_alloc;
    INSERT INTO usage_history (id, quota_id, allocation_id, entity_type, entity_id,
                               resource_type, allocated_value, operation, job_id,
                               timestamp, metadata, consumed_delta)
    VALUES (v_history, v_alloc.quota_id, v_alloc.id, v_alloc.entity_type,
            v_alloc.entity_id, v_alloc.resource_type, v_alloc.allocated_value,
            CASE WHEN p_status = 'expired' THEN 'expire' ELSE 'release' END,
            v_alloc.job_id, v_now, v_alloc.metadata, v_delta);
    SELECT path INTO v_path FROM quotas WHERE id = v_alloc.quota_id;
    v_when := hq_charge_path(v_path, -v_reserve, v_delta, v_now, p_tz, v_deadline,
                             p_alerts);
    IF v_when <> v_now THEN
        -- Charged in a later period than this statement's clock (hq_charge_path).
        UPDATE usage_history SET timestamp = v_when WHERE id = v_history;
    END IF;
    PERFORM hq_allocation_events(v_alloc, v_final - v_delta,
                                 p_status = 'expired');
    RETURN json_build_object('outcome', 'released', 'allocation', row_to_json(v_alloc));
END
$$;
