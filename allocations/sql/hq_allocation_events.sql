-- The events of one allocation just consumed, released or expired (DESIGN §7a):
-- `allocation.overrun` when its consumption passes what it reserved (once: only
-- when this report crosses it, from p_before), `allocation.expired` when its lease
-- ran out. About the allocation's own quota.
CREATE OR REPLACE FUNCTION hq_allocation_events(
    p_alloc allocations, p_before numeric, p_expired boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q quotas%ROWTYPE;
BEGIN
    IF NOT p_expired AND NOT (p_before <= p_alloc.allocated_value
                              AND p_alloc.consumed_value > p_alloc.allocated_value) THEN
        RETURN;
    END IF;
    SELECT * INTO q FROM quotas WHERE id = p_alloc.quota_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_before <= p_alloc.allocated_value
       AND p_alloc.consumed_value > p_alloc.allocated_value THEN
        PERFORM hq_note('allocation.overrun', q, jsonb_build_object(
            'allocation_id', p_alloc.id, 'job_id', p_alloc.job_id,
            'allocated_value', p_alloc.allocated_value,
            'consumed_value', p_alloc.consumed_value));
    END IF;
    IF p_expired THEN
        PERFORM hq_note('allocation.expired', q, jsonb_build_object(
            'allocation_id', p_alloc.id, 'job_id', p_alloc.job_id,
            'allocated_value', p_alloc.allocated_value,
            'consumed_value', p_alloc.consumed_value,
            'expires_at', p_alloc.expires_at));
    END IF;
END
$$;
