"""The allocation engine's SQL functions (see allocations/services.py).

Each allocate, release or expiry is one call to one of these functions, so it runs
as one statement in one short transaction with one round trip. Quota rows are
locked in the global order of allocations/locking.py: leaf first, root last, one
row at a time by id (a single ``UPDATE … WHERE id IN (…)`` lets the planner pick the
order, and deadlocks under load). The path is read before any row is locked; it
never changes, since ``parent_id`` is immutable.
"""

from django.db import migrations

FUNCTIONS = r"""
-- The cap of one level: the effective limit, or the burst limit times the
-- overcommit ratio when the request allows bursting and the level has one.
CREATE OR REPLACE FUNCTION hq_cap(
    p_limit numeric, p_burst numeric, p_ratio numeric, p_allow_burst boolean
) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_allow_burst AND p_burst IS NOT NULL THEN p_burst ELSE p_limit END
           * p_ratio
$$;

-- The one admission predicate, shared by check and allocate (DESIGN §3).
CREATE OR REPLACE FUNCTION hq_fits(p_used numeric, p_requested numeric, p_cap numeric)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_used + p_requested <= p_cap
$$;

-- A quota and its ancestors, leaf first. parent_id never changes, so the path read
-- here stays true for the life of every row on it.
CREATE OR REPLACE FUNCTION hq_path(p_leaf uuid) RETURNS uuid[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_path uuid[] := ARRAY[]::uuid[];
    v_id uuid := p_leaf;
BEGIN
    WHILE v_id IS NOT NULL AND cardinality(v_path) < 64 LOOP
        v_path := v_path || v_id;
        SELECT parent_id INTO v_id FROM quotas WHERE id = v_id;
    END LOOP;
    RETURN v_path;
END
$$;

-- One level of a check or allocate response.
CREATE OR REPLACE FUNCTION hq_level(q quotas, p_requested numeric, p_allow_burst boolean)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'quota_id', q.id,
        'entity_type', q.entity_type,
        'entity_id', q.entity_id,
        'cap', hq_cap(q.limit_value, q.burst_limit, q.overcommit_ratio, p_allow_burst),
        'effective_limit', q.limit_value * q.overcommit_ratio,
        'soft_limit', q.soft_limit,
        'used', q.used,
        'available', greatest(
            0, hq_cap(q.limit_value, q.burst_limit, q.overcommit_ratio, p_allow_burst)
               - q.used),
        'allowed', hq_fits(
            q.used, p_requested,
            hq_cap(q.limit_value, q.burst_limit, q.overcommit_ratio, p_allow_burst))
    )
$$;

-- Every level of a path as it stands now (no locks), leaf first.
CREATE OR REPLACE FUNCTION hq_levels(p_path uuid[], p_requested numeric, p_allow_burst boolean)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(hq_level(q, p_requested, p_allow_burst) ORDER BY p.ord), '[]')
      FROM unnest(p_path) WITH ORDINALITY AS p(id, ord)
      JOIN quotas q ON q.id = p.id
$$;

-- Check: the allocate predicate, evaluated without writing.
CREATE OR REPLACE FUNCTION hq_check(
    p_entity_type text, p_entity_id text, p_resource text,
    p_requested numeric, p_allow_burst boolean
) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_leaf uuid;
BEGIN
    SELECT id INTO v_leaf FROM quotas
     WHERE entity_type = p_entity_type AND entity_id = p_entity_id
       AND resource_type = p_resource;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'no_quota');
    END IF;
    RETURN jsonb_build_object(
        'outcome', 'checked',
        'levels', hq_levels(hq_path(v_leaf), p_requested, p_allow_burst));
END
$$;

-- Allocate, all or nothing along the path.
--   1. Claim the idempotency key by inserting the allocation, and insert its history
--      row. Inserts come first so the quota rows, above all the contended ones near
--      the root, stay locked for as short a time as possible.
--   2. Charge each level with a conditional UPDATE by id, leaf first and root last:
--      the lock and the predicate in one step. The root's update is the last write;
--      the transaction commits as the statement ends.
--   3. A level that refuses (or has vanished) stops the walk: the levels already
--      charged are still locked by us, so subtracting the amount again is exact, and
--      the two inserted rows are deleted. Nothing of the attempt stays visible.
CREATE OR REPLACE FUNCTION hq_allocate(
    p_entity_type text, p_entity_id text, p_resource text, p_job uuid,
    p_requested numeric, p_allow_burst boolean, p_metadata jsonb, p_ttl integer
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_leaf uuid;
    v_path uuid[];
    v_alloc allocations%ROWTYPE;
    v_history uuid;
    v_row quotas%ROWTYPE;
    v_levels jsonb := '[]';
    v_burst boolean := false;
    v_attempt int := 0;
    i int;
BEGIN
    SELECT id INTO v_leaf FROM quotas
     WHERE entity_type = p_entity_type AND entity_id = p_entity_id
       AND resource_type = p_resource;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'no_quota');
    END IF;
    v_path := hq_path(v_leaf);

    LOOP
        INSERT INTO allocations (id, quota_id, entity_type, entity_id, job_id,
                                 resource_type, allocated_value, status, allocated_at,
                                 expires_at, is_burst, version, metadata)
        VALUES (gen_random_uuid(), v_leaf, p_entity_type, p_entity_id, p_job,
                p_resource, p_requested, 'active', now(),
                CASE WHEN p_ttl IS NULL THEN NULL
                     ELSE now() + make_interval(secs => p_ttl) END,
                false, 1, coalesce(p_metadata, '{}'::jsonb))
        ON CONFLICT (job_id, resource_type) WHERE status = 'active' DO NOTHING
        RETURNING * INTO v_alloc;
        EXIT WHEN FOUND;
        -- The key is taken by a committed allocation (ON CONFLICT waited for it).
        SELECT * INTO v_alloc FROM allocations
         WHERE job_id = p_job AND resource_type = p_resource AND status = 'active';
        IF FOUND THEN
            IF v_alloc.entity_type = p_entity_type AND v_alloc.entity_id = p_entity_id
               AND v_alloc.allocated_value = p_requested THEN
                RETURN jsonb_build_object('outcome', 'replayed',
                                          'allocation', to_jsonb(v_alloc));
            END IF;
            RETURN jsonb_build_object('outcome', 'conflict',
                                      'allocation', to_jsonb(v_alloc));
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
                               timestamp, metadata)
    VALUES (v_history, v_leaf, v_alloc.id, p_entity_type, p_entity_id, p_resource,
            p_requested, 'allocate', p_job, now(), v_alloc.metadata);

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
            DELETE FROM usage_history WHERE id = v_history;
            DELETE FROM allocations WHERE id = v_alloc.id;
            IF NOT EXISTS (SELECT 1 FROM quotas WHERE id = v_path[i]) THEN
                RETURN jsonb_build_object('outcome', 'no_quota');
            END IF;
            RETURN jsonb_build_object(
                'outcome', 'denied',
                'blocking_quota_id', v_path[i],
                'levels', hq_levels(v_path, p_requested, p_allow_burst));
        END IF;
        v_burst := v_burst OR v_row.used > v_row.limit_value * v_row.overcommit_ratio;
        v_levels := v_levels || hq_level(v_row, 0, p_allow_burst);
    END LOOP;

    IF v_burst THEN
        UPDATE allocations SET is_burst = true WHERE id = v_alloc.id;
        v_alloc.is_burst := true;
    END IF;
    RETURN jsonb_build_object('outcome', 'granted', 'allocation', to_jsonb(v_alloc),
                              'levels', v_levels);
END
$$;

-- Release or expire an active allocation: return its amount to every level, once.
-- The allocation row is claimed first (a conditional UPDATE: of two concurrent
-- releases exactly one finds it active), then the levels are updated leaf first.
CREATE OR REPLACE FUNCTION hq_release(p_id uuid, p_status text, p_only_expired boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_alloc allocations%ROWTYPE;
    v_path uuid[];
    i int;
BEGIN
    UPDATE allocations
       SET status = p_status, released_at = now(), version = version + 1
     WHERE id = p_id AND status = 'active'
       AND (NOT p_only_expired OR expires_at <= now())
    RETURNING * INTO v_alloc;
    IF NOT FOUND THEN
        SELECT * INTO v_alloc FROM allocations WHERE id = p_id;
        IF NOT FOUND THEN
            RETURN jsonb_build_object('outcome', 'not_found');
        END IF;
        RETURN jsonb_build_object('outcome',
                                  CASE WHEN v_alloc.status = 'active' THEN 'not_expired'
                                       ELSE 'already_released' END,
                                  'allocation', to_jsonb(v_alloc));
    END IF;
    INSERT INTO usage_history (id, quota_id, allocation_id, entity_type, entity_id,
                               resource_type, allocated_value, operation, job_id,
                               timestamp, metadata)
    VALUES (gen_random_uuid(), v_alloc.quota_id, v_alloc.id, v_alloc.entity_type,
            v_alloc.entity_id, v_alloc.resource_type, v_alloc.allocated_value,
            CASE WHEN p_status = 'expired' THEN 'expire' ELSE 'release' END,
            v_alloc.job_id, now(), v_alloc.metadata);
    v_path := hq_path(v_alloc.quota_id);
    FOR i IN 1 .. cardinality(v_path) LOOP
        UPDATE quotas SET used = used - v_alloc.allocated_value WHERE id = v_path[i];
    END LOOP;
    RETURN jsonb_build_object('outcome', 'released', 'allocation', to_jsonb(v_alloc));
END
$$;
"""

DROP = """
DROP FUNCTION IF EXISTS hq_release(uuid, text, boolean);
DROP FUNCTION IF EXISTS hq_allocate(text, text, text, uuid, numeric, boolean, jsonb, integer);
DROP FUNCTION IF EXISTS hq_check(text, text, text, numeric, boolean);
DROP FUNCTION IF EXISTS hq_levels(uuid[], numeric, boolean);
DROP FUNCTION IF EXISTS hq_level(quotas, numeric, boolean);
DROP FUNCTION IF EXISTS hq_path(uuid);
DROP FUNCTION IF EXISTS hq_fits(numeric, numeric, numeric);
DROP FUNCTION IF EXISTS hq_cap(numeric, numeric, numeric, boolean);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0001_initial"),
        ("quotas", "0002_builtin_resource_types"),
    ]

    operations = [migrations.RunSQL(FUNCTIONS, DROP)]
