-- Release every active allocation of a job in one transaction (DESIGN §3b), each
-- settled as hq_release settles one: p_consumed holds final consumptions by
-- resource type (time-based resources only); without one a time-based allocation
-- is charged rate × hours held, or its whole reservation.
--   1. Lock the job's active allocations in the scope, by resource type (the order
--      of keys), and check every final value before writing anything.
--   2. Lock every level of every path in the one global order (depth, then id):
--      the paths are charged afterwards, with all their rows already held.
--   3. Record each release with its history row and charge its path
--      (hq_charge_path): consumed += the last increment, reserved -= the rest.
CREATE OR REPLACE FUNCTION hq_release_job(
    p_job uuid, p_consumed jsonb, p_scope_type text, p_scope_id text,
    p_lock_budget_ms integer, p_tz text, p_alerts numeric[]
) RETURNS json LANGUAGE plpgsql SET lock_timeout = 0 AS $$
DECLARE
    v_deadline timestamptz := hq_deadline(p_lock_budget_ms);
    v_now timestamptz := hq_now();
    v_when timestamptz;
    v_allocs allocations[];
    v_alloc allocations%ROWTYPE;
    v_finals numeric[] := '{}';
    v_final numeric;
    v_settle record;
    v_history uuid;
    v_path uuid[];
    v_done json[] := '{}';
    v_unknown text;
BEGIN
    PERFORM hq_lock_budget(v_deadline);
    SELECT coalesce(array_agg(a ORDER BY a.resource_type), '{}') INTO v_allocs
      FROM (SELECT * FROM allocations
             WHERE job_id = p_job AND status = 'active'
               AND hq_in_scope((SELECT path FROM quotas q WHERE q.id = quota_id),
                               p_scope_type, p_scope_id)
             ORDER BY resource_type
               FOR UPDATE) a;
    IF cardinality(v_allocs) = 0 THEN
        RETURN json_build_object('outcome', 'none_active');
    END IF;
    SELECT key INTO v_unknown FROM jsonb_object_keys(coalesce(p_consumed, '{}')) key
     WHERE key <> ALL (ARRAY(SELECT (unnest(v_allocs)).resource_type))
     LIMIT 1;
    IF FOUND THEN
        RETURN json_build_object('outcome', 'not_held', 'resource_type', v_unknown);
    END IF;

    FOREACH v_alloc IN ARRAY v_allocs LOOP
        SELECT * INTO v_settle FROM hq_settle_value(
            v_alloc, (p_consumed ->> v_alloc.resource_type)::numeric, v_now);
        IF v_settle.outcome IS NOT NULL THEN
            RETURN json_build_object('outcome', v_settle.outcome,
                                     'allocation', row_to_json(v_alloc));
        END IF;
        v_final := v_settle.final;
        v_finals := v_finals || v_final;
    END LOOP;

    PERFORM 1 FROM quotas
      WHERE id IN (SELECT unnest(q.path) FROM quotas q
                    WHERE q.id IN (SELECT (unnest(v_allocs)).quota_id))
      ORDER BY depth DESC, id
        FOR UPDATE;

    FOR i IN 1 .. cardinality(v_allocs) LOOP
        v_alloc := v_allocs[i];
        UPDATE allocations
           SET status = 'released', released_at = now(), version = version + 1,
               consumed_value = v_finals[i]
         WHERE id = v_alloc.id;
        v_history := gen_random_uuid();
        INSERT INTO usage_history (id, quota_id, allocation_id, entity_type,
                                   entity_id, resource_type, allocated_value,
                                   operation, job_id, timestamp, metadata,
                                   consumed_delta)
        VALUES (v_history, v_alloc.quota_id, v_alloc.id, v_alloc.entity_type,
                v_alloc.entity_id, v_alloc.resource_type, v_alloc.allocated_value,
                'release', v_alloc.job_id, v_now, v_alloc.metadata,
                v_finals[i] - v_alloc.consumed_value);
        SELECT path INTO v_path FROM quotas WHERE id = v_alloc.quota_id;
        v_when := hq_charge_path(
            v_path, -greatest(0, v_alloc.allocated_value - v_alloc.consumed_value),
            v_finals[i] - v_alloc.consumed_value, v_now, p_tz, v_deadline, p_alerts);
        IF v_when <> v_now THEN
            UPDATE usage_history SET timestamp = v_when WHERE id = v_history;
        END IF;
        PERFORM hq_allocation_events(
            (SELECT a FROM allocations a WHERE a.id = v_alloc.id),
            v_alloc.consumed_value, false);
    END LOOP;
    RETURN json_build_object(
        'outcome', 'released',
        'allocations', (SELECT json_agg(row_to_json(a) ORDER BY a.resource_type)
                          FROM allocations a
                         WHERE a.id IN (SELECT (unnest(v_allocs)).id)));
END
$$;
