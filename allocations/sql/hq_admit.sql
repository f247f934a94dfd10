-- Admit a job: several resources for one entity, all or nothing (DESIGN §3b).
--   1. Read each resource's path (no lock: paths never change). A resource the
--      entity has no quota for, or one outside the key's scope, is `no_quota`.
--   2. Claim each allocation's idempotency key by inserting it, in the order of the
--      resource slugs (the global order of keys, quotas/locking.py). A key already
--      held means a replay (the job holds exactly these resources with these
--      values), a stale allocation to expire first, or a conflict; a job that holds
--      other resources as well is a conflict too. Whatever this call inserted is
--      deleted again.
--   3. Insert one history row per allocation.
--   4. Charge every level of every path in the one global order: depth first, the
--      deepest rows first and the roots last, then by id (hq_charge, which rolls a
--      budget over first). The paths of a job never share a row: each resource
--      has its own tree.
--   5. A level that refuses stops the walk: the levels charged so far are still
--      locked by us, so their charges are taken back exactly, and the inserted rows
--      deleted; the answer names the blocking resource and level, with every
--      resource's levels.
CREATE OR REPLACE FUNCTION hq_admit(
    p_entity_type text, p_entity_id text, p_job uuid, p_resources jsonb,
    p_rates jsonb, p_allow_burst boolean, p_metadata jsonb, p_ttl integer,
    p_scope_type text, p_scope_id text, p_lock_budget_ms integer, p_tz text,
    p_alerts numeric[]
) RETURNS json LANGUAGE plpgsql SET lock_timeout = 0 AS $$
DECLARE
    v_deadline timestamptz := hq_deadline(p_lock_budget_ms);
    v_now timestamptz := hq_now();
    v_resources text[];
    v_resource text;
    v_amounts numeric[];
    v_leaves uuid[] := '{}';
    v_path uuid[];
    v_alloc allocations%ROWTYPE;
    v_allocs allocations[] := '{}';
    v_new uuid[] := '{}';
    v_clash boolean := false;
    v_held allocations[];
    v_level_ids uuid[];
    v_level_of int[];
    v_row quotas%ROWTYPE;
    v_rows quotas[] := '{}';
    v_burst boolean[];
    v_level json[] := '{}';
    v_parts text[] := '{}';
    v_list json[];
    n int;
    i int;
    j int;
BEGIN
    SELECT array_agg(key ORDER BY key), array_agg(value::numeric ORDER BY key)
      INTO v_resources, v_amounts
      FROM jsonb_each_text(p_resources);
    n := cardinality(v_resources);
    -- Rates belong to time-based resources of this job (looked up only when sent).
    IF p_rates IS NOT NULL AND p_rates <> '{}' THEN
        SELECT key INTO v_resource FROM jsonb_object_keys(p_rates) key
         WHERE key <> ALL (v_resources)
            OR NOT EXISTS (SELECT 1 FROM resource_types
                            WHERE slug = key AND kind = 'time_based')
         ORDER BY key LIMIT 1;
        IF FOUND THEN
            RETURN json_build_object('outcome', 'bad_rate', 'resource_type', v_resource);
        END IF;
    END IF;
    FOR i IN 1 .. n LOOP
        SELECT path INTO v_path FROM quotas
         WHERE entity_type = p_entity_type AND entity_id = p_entity_id
           AND resource_type = v_resources[i];
        IF NOT FOUND OR NOT hq_in_scope(v_path, p_scope_type, p_scope_id) THEN
            RETURN json_build_object('outcome', 'no_quota',
                                     'resource_type', v_resources[i]);
        END IF;
        v_leaves := v_leaves || v_path[1];
    END LOOP;

    FOR i IN 1 .. n LOOP
        PERFORM hq_lock_budget(v_deadline);
        INSERT INTO allocations (id, quota_id, entity_type, entity_id, job_id,
                                 resource_type, allocated_value, status, allocated_at,
                                 expires_at, is_burst, version, metadata,
                                 consumed_value, rate, budget_started_at)
        VALUES (gen_random_uuid(), v_leaves[i], p_entity_type, p_entity_id, p_job,
                v_resources[i], v_amounts[i], 'active', now(),
                CASE WHEN p_ttl IS NULL THEN NULL
                     ELSE now() + make_interval(secs => p_ttl) END,
                false, 1, coalesce(p_metadata, '{}'::jsonb), 0,
                (p_rates ->> v_resources[i])::numeric, v_now)
        ON CONFLICT (job_id, resource_type) WHERE status = 'active' DO NOTHING
        RETURNING * INTO v_alloc;
        IF FOUND THEN
            v_new := v_new || v_alloc.id;
            v_allocs := v_allocs || v_alloc;
        ELSE
            v_clash := true;
        END IF;
    END LOOP;

    -- What else the job holds, committed (ON CONFLICT waited for any in flight).
    SELECT coalesce(array_agg(a ORDER BY a.resource_type), '{}') INTO v_held
      FROM allocations a
     WHERE a.job_id = p_job AND a.status = 'active' AND a.id <> ALL (v_new);
    IF v_clash OR cardinality(v_held) > 0 THEN
        DELETE FROM allocations WHERE id = ANY (v_new);
        RETURN hq_job_clash(v_held, p_entity_type, p_entity_id, v_resources,
                            v_amounts, v_new, p_scope_type, p_scope_id);
    END IF;

    INSERT INTO usage_history (id, quota_id, allocation_id, entity_type, entity_id,
                               resource_type, allocated_value, operation, job_id,
                               timestamp, metadata, consumed_delta)
    SELECT gen_random_uuid(), a.quota_id, a.id, a.entity_type, a.entity_id,
           a.resource_type, a.allocated_value, 'allocate', a.job_id, v_now,
           a.metadata, 0
      FROM unnest(v_allocs) a;

    -- Every level of every path, in the global lock order.
    SELECT array_agg(l.id ORDER BY l.depth DESC, l.id),
           array_agg(p.ord ORDER BY l.depth DESC, l.id)
      INTO v_level_ids, v_level_of
      FROM unnest(v_leaves) WITH ORDINALITY AS p(leaf, ord)
      JOIN quotas leaf ON leaf.id = p.leaf
      JOIN quotas l ON l.id = ANY (leaf.path);
    v_burst := array_fill(false, ARRAY[n]);
    FOR j IN 1 .. cardinality(v_level_ids) LOOP
        PERFORM hq_lock_budget(v_deadline);
        v_row := hq_charge(v_level_ids[j], v_amounts[v_level_of[j]], 0, true,
                           p_allow_burst, v_now, p_tz);
        IF v_row.id IS NULL THEN
            UPDATE quotas q SET reserved = q.reserved - v_amounts[c.ord]
              FROM unnest(v_level_ids[1:j-1], v_level_of[1:j-1]) AS c(id, ord)
             WHERE q.id = c.id;
            DELETE FROM usage_history WHERE allocation_id = ANY (v_new);
            DELETE FROM allocations WHERE id = ANY (v_new);
            IF NOT EXISTS (SELECT 1 FROM quotas WHERE id = v_level_ids[j]) THEN
                RETURN json_build_object('outcome', 'no_quota',
                                         'resource_type', v_resources[v_level_of[j]]);
            END IF;
            RETURN json_build_object(
                'outcome', 'denied',
                'resource_type', v_resources[v_level_of[j]],
                'blocking_quota_id', v_level_ids[j],
                'levels', hq_job_levels(v_resources, v_amounts, v_leaves,
                                        p_allow_burst, v_now, p_tz));
        END IF;
        v_burst[v_level_of[j]] := v_burst[v_level_of[j]]
            OR v_row.used > (v_row.limit_value + v_row.carried_over)
                            * v_row.overcommit_ratio;
        v_rows := v_rows || v_row;
        v_level := v_level || hq_level(v_row, 0, p_allow_burst);
    END LOOP;
    PERFORM hq_alerts(v_rows, p_alerts);

    IF true = ANY (v_burst) THEN
        UPDATE allocations a SET is_burst = true
          FROM unnest(v_resources, v_burst) AS b(resource, burst)
         WHERE a.id = ANY (v_new) AND a.resource_type = b.resource AND b.burst;
        FOR i IN 1 .. n LOOP
            v_allocs[i].is_burst := v_burst[i];
        END LOOP;
    END IF;
    -- Each resource's levels as charged (leaf first: the walk went deepest first),
    -- from the rows this call holds locked rather than read again.
    FOR i IN 1 .. n LOOP
        v_list := '{}';
        FOR j IN 1 .. cardinality(v_level) LOOP
            IF v_level_of[j] = i THEN
                v_list := v_list || v_level[j];
            END IF;
        END LOOP;
        v_parts := v_parts
            || (to_json(v_resources[i])::text || ':' || array_to_json(v_list)::text);
    END LOOP;
    RETURN json_build_object(
        'outcome', 'granted',
        'allocations', (SELECT json_agg(row_to_json(a)) FROM unnest(v_allocs) a),
        'levels', ('{' || array_to_string(v_parts, ',') || '}')::json);
END
$$;
