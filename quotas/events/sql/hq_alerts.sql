-- Threshold alerts of levels whose usage just changed (DESIGN §7a, P4): edge-
-- triggered, one event per crossing, never one per allocation. A level's thresholds
-- are percents of its cap (its alert_thresholds, else p_defaults: the setting
-- ALERT_THRESHOLDS). alerted_level is the highest threshold that fired and has not
-- re-armed since; soft_alerted the same for the soft limit.
--   * Up: each threshold above alerted_level that usage has reached fires
--     `quota.threshold_crossed` once (a jump past two fires both).
--   * Down: a fired threshold re-arms once usage falls 5 points below it, with
--     `quota.back_under`.
--   * Past the soft limit: `quota.soft_limit_exceeded`, re-armed once usage falls
--     5 points of the cap below the soft limit.
-- The caller holds every row's lock (so each edge is seen by one transaction only)
-- and calls this once the whole operation has succeeded. A level that crosses
-- nothing costs a few comparisons and writes nothing.
CREATE OR REPLACE FUNCTION hq_alerts(p_rows quotas[], p_defaults numeric[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q quotas%ROWTYPE;
    v_thresholds numeric[];
    v_cap numeric;
    v_pct numeric;
    v_level numeric;
    v_soft boolean;
    t numeric;
BEGIN
    FOREACH q IN ARRAY p_rows LOOP
        CONTINUE WHEN q.id IS NULL;
        v_thresholds := coalesce(q.alert_thresholds, p_defaults, '{}');
        v_cap := (q.limit_value + q.carried_over) * q.overcommit_ratio;
        v_pct := CASE WHEN v_cap > 0 THEN q.used / v_cap * 100
                      WHEN q.used > 0 THEN 'Infinity'::numeric ELSE 0 END;
        v_level := 0;  -- the highest threshold still fired once this is done
        FOREACH t IN ARRAY v_thresholds LOOP
            IF t > q.alerted_level AND v_pct >= t THEN
                v_level := greatest(v_level, t);
                PERFORM hq_note('quota.threshold_crossed', q, jsonb_build_object(
                    'threshold', t, 'used', q.used, 'cap', v_cap));
            ELSIF t <= q.alerted_level AND v_pct < t - 5 THEN
                PERFORM hq_note('quota.back_under', q, jsonb_build_object(
                    'threshold', t, 'used', q.used, 'cap', v_cap));
            ELSIF t <= q.alerted_level THEN
                v_level := greatest(v_level, t);  -- fired and not re-armed
            END IF;
        END LOOP;
        v_soft := q.soft_alerted;
        IF q.soft_limit IS NOT NULL AND NOT q.soft_alerted
           AND q.used > q.soft_limit THEN
            PERFORM hq_note('quota.soft_limit_exceeded', q, jsonb_build_object(
                'soft_limit', q.soft_limit, 'used', q.used, 'cap', v_cap));
            v_soft := true;
        ELSIF q.soft_alerted AND (q.soft_limit IS NULL
                                  OR q.used < q.soft_limit - v_cap * 0.05) THEN
            v_soft := false;
        END IF;
        IF v_level <> q.alerted_level OR v_soft <> q.soft_alerted THEN
            UPDATE quotas SET alerted_level = v_level, soft_alerted = v_soft
             WHERE id = q.id;
        END IF;
    END LOOP;
END
$$;
