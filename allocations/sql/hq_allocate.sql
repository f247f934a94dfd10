-- Allocate, all or nothing along the path (DESIGN §3; lock order: quotas/locking.py).
--   1. Read the path with the leaf (no lock: it never changes). An entity outside
--      the key's scope is answered as if it had no quota, before anything is
--      written; every lock wait of the call shares one budget (hq_lock_budget).
--   2. Claim the idempotency key by inserting the allocation, and insert its history
--      row. Inserts come first so the quota rows, above all the contended ones near
--      the root, stay locked for as short a time as possible. A key held by an
--      active allocation answers `replayed` (same entity and value), `conflict`
--      (other values) or `stale` (its lease has run out: the caller expires it in a
--      transaction of its own and comes back, so this one never holds quota rows
--      while it waits on another transaction's key). A conflicting or stale
--      allocation outside the key's scope is reported as a bare `conflict`: a scoped
--      request never learns of, nor touches, anything outside its scope.
--   3. Charge each level with a conditional UPDATE by id, leaf first and root last:
--      the lock and the predicate in one step (hq_charge, which first rolls over a
--      budget whose period has ended). A time-based resource reserves the request,
--      its estimate (DESIGN §3a). The root's update is the last write; the
--      transaction commits as the statement ends.
--   4. A level that refuses (or has vanished) stops the walk: the levels already
--      charged are still locked by us, so subtracting the amount again is exact, and
--      the two inserted rows are deleted. Nothing of the attempt stays visible.
CREATE OR REPLACE FUNCTION hq_allocate(
    p_entity_type text, p_entity_id text, p_resource text, p_job uuid,
    p_requested numeric, p_allow_burst boolean, p_metadata jsonb, p_ttl integer,
    p_scope_type text, p_scope_id text, p_lock_budget_ms integer, p_rate numeric,
    p_tz text, p_alerts numeric[]
) RETURNS json LANGUAGE plpgsql SET lock_timeout = 0 AS $$
DECLARE
    v_deadline timestamptz := hq_deadline(p_lock_budget_ms);
    v_now timestamptz := hq_now();
    v_path uuid[];
    v_alloc allocations%ROWTYPE;
    v_history uuid;
    v_row quotas%ROWTYPE;
    v_rows quotas[] := '{}';
    v_levels json[] := '{}';
    v_burst boolean := false;
    v_attempt int := 0;
    i int;
BEGIN
    SELECT path INTO v_path FROM quotas
     WHERE entity_type = p_entity_type AND entity_id = p_entity_id
       AND resource_type = p_resource;
    IF NOT FOUND OR NOT hq_in_scope(v_path, p_scope_type, p_scope_id) THEN
        RETURN json_build_object('outcome', 'no_quota');
    END IF;
    -- A rate belongs to a time-based resource (looked up only when one is sent).
    IF p_rate IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM resource_types WHERE slug = p_resource AND kind = 'time_based')
    THEN
        RETURN json_build_object('outcome', 'bad_rate', 'resource_type', p_resource);
    END IF;

    LOOP
        PERFORM hq_lock_budget(v_deadline);
        INSERT INTO allocations (id, quota_id, entity_type, entity_id, job_id,
                                 resource_type, allocated_value, status, allocated_at,
                                 expires_at, is_burst, version, metadata,
                                 consumed_value, rate, budget_started_at)
        VALUES (gen_random_uuid(), v_path[1], p_entity_type, p_entity_id, p_job,
                p_resource, p_requested, 'active', now(),
                CASE WHEN p_ttl IS NULL THEN NULL
                     ELSE now() + make_interval(secs => p_ttl) END,
                false, 1, coalesce(p_metadata, '{}'::jsonb), 0, p_rate, v_now)
        ON CONFLICT (job_id, resource_type) WHERE status = 'active' DO NOTHING
        RETURNING * INTO v_alloc;
        EXIT WHEN FOUND;
        -- The key is taken by a committed allocation (ON CONFLICT waited for it).
        SELECT * INTO v_alloc FROM allocations
         WHERE job_id = p_job AND resource_type = p_resource AND status = 'active';
        IF FOUND THEN
            IF NOT hq_in_scope((SELECT path FROM quotas WHERE id = v_alloc.quota_id),
                               p_scope_type, p_scope_id) THEN
                RETURN json_build_object('outcome', 'conflict', 'allocation', NULL);
            END IF;
            IF v_alloc.expires_at IS NOT NULL AND v_alloc.expires_at <= now() THEN
                -- Its lease has run out: the caller expires it and comes back.
                RETURN json_build_object('outcome', 'stale',
                                         'allocation', row_to_json(v_alloc));
            END IF;
            IF v_alloc.entity_type = p_entity_type AND v_alloc.entity_id = p_entity_id
               AND v_alloc.allocated_value = p_requested THEN
                RETURN json_build_object('outcome', 'replayed',
                                         'allocation', row_to_json(v_alloc));
            END IF;
            RETURN json_build_object('outcome', 'conflict',
                                     'allocation', row_to_json(v_alloc));
        END IF;
        -- Released in between: the key is free again, try once more.
        v_attempt := v_attempt + 1;
        IF v_attempt >= 3 THEN
            RAISE EXCEPTION 'allocation key (%, %) keeps changing', p_job, p_resource;
        END IF;
    END LOOP;

    v_history := gen_random_uuid();
    INSERT INTO usage_history (id, quota_id, allocation_id, entity_type, entity_id,
                               resource_type, allocated_value, operation, job_id,
                               timestamp, metadata, consumed_delta)
    VALUES (v_history, v_path[1], v_alloc.id, p_entity_type, p_entity_id, p_resource,
            p_requested, 'allocate', p_job, v_now, v_alloc.metadata, 0);

    FOR i IN 1 .. cardinality(v_path) LOOP
        PERFORM hq_lock_budget(v_deadline);
        v_row := hq_charge(v_path[i], p_requested, 0, true, p_allow_burst, v_now,
                           p_tz);
        IF v_row.id IS NULL THEN
            IF i > 1 THEN
                UPDATE quotas SET reserved = reserved - p_requested
                 WHERE id = ANY (v_path[1:i-1]);
            END IF;
            DELETE FROM usage_history WHERE id = v_history;
            DELETE FROM allocations WHERE id = v_alloc.id;
            IF NOT EXISTS (SELECT 1 FROM quotas WHERE id = v_path[i]) THEN
                RETURN json_build_object('outcome', 'no_quota');
            END IF;
            RETURN json_build_object(
                'outcome', 'denied',
                'blocking_quota_id', v_path[i],
                'levels', hq_levels(v_path, p_requested, p_allow_burst, v_now, p_tz));
        END IF;
        v_burst := v_burst OR v_row.used > (v_row.limit_value + v_row.carried_over)
                                           * v_row.overcommit_ratio;
        v_levels := v_levels || hq_level(v_row, 0, p_allow_burst);
        v_rows := v_rows || v_row;
    END LOOP;
    -- Every level is charged and still locked: the alerts of what this crossed.
    PERFORM hq_alerts(v_rows, p_alerts);

    IF v_burst THEN
        UPDATE allocations SET is_burst = true WHERE id = v_alloc.id;
        v_alloc.is_burst := true;
    END IF;
    RETURN json_build_object('outcome', 'granted', 'allocation', row_to_json(v_alloc),
                             'levels', array_to_json(v_levels));
END
$$;
