-- Threshold alerts of levels just charged (DESIGN §7a): edge-triggered, one event
-- per crossing, never one per allocation. A level's thresholds are percents of its
-- cap (its alert_thresholds, else p_defaults: ALERT_THRESHOLDS). alerted_level is
-- the highest threshold that fired and has not re-armed; soft_alerted the same for
-- the soft limit.
--   * Up: each threshold above alerted_level that usage has reached fires
--     `quota.threshold_crossed` once.
--   * Down: a fired threshold re-arms once usage falls 5 points below it, with
--     `quota.back_under`.
--   * Above the soft limit: `quota.soft_limit_exceeded`, re-armed below it by 5
--     points of the cap.
-- A level that crosses nothing costs a few comparisons and writes nothing. The
-- caller holds every row's lock and calls it once the whole operation succeeded.
CREATE OR REPLACE FUNCTION hq_alerts(p_rows quotas[], p_defaults numeric[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q quotas%ROWTYPE;
    v_cap numeric;
    v_pct numeric;
    v_fired numeric;
    v_soft boolean;
    v_soft_floor numeric;
    t numeric;
BEGIN
    FOREACH q IN ARRAY p_rows LOOP
        CONTINUE WHEN q.id IS NULL;
        v_cap := (q.limit_value + q.carried_over) * q.overcommit_ratio;
        v_pct := CASE WHEN v_cap > 0 THEN q.used / v_cap * 100
                      WHEN q.used > 0 THEN 1e9 ELSE 0 END;
        v_fired := q.alerted_level;
        v_soft := q.soft_alerted;
        FOREACH t IN ARRAY coalesce(q.alert_thresholds, p_defaults) LOOP
            IF t > q.alerted_level AND v_pct >= t THEN
                PERFORM hq_note('quota.threshold_crossed', q, jsonb_build_object(
                    'threshold', t, 'used', q.used, 'cap', v_cap));
                v_fired := greatest(v_fired, t);
            ELSIF t <= q.alerted_level AND v_pct < t - 5 THEN
                PERFORM hq_note('quota.back_under', q, jsonb_build_object(
                    'threshold', t, 'used', q.used, 'cap', v_cap));
                IF t <= v_fired THEN
                    v_fired := coalesce(
                        (SELECT max(u) FROM unnest(coalesce(q.alert_thresholds,
                                                            p_defaults)) u
                          WHERE u < t AND u <= q.alerted_level AND v_pct >= u - 5),
                        0);
                END IF;
            END IF;
        END LOOP;
        IF q.soft_limit IS NOT NULL THEN
            v_soft_floor := q.soft_limit - v_cap * 0.05;
            IF NOT q.soft_alerted AND q.used > q.soft_limit THEN
                PERFORM hq_note('quota.soft_limit_exceeded', q, jsonb_build_object(
                    'soft_limit', q.soft_limit, 'used', q.used, 'cap', v_cap));
                v_soft := true;
            ELSIF q.soft_alerted AND q.used < v_soft_floor THEN
                v_soft := false;
            END IF;
        END IF;
        IF v_fired <> q.alerted_level OR v_soft <> q.soft_alerted THEN
            UPDATE quotas SET alerted_level = v_fired, soft_alerted = v_soft
             WHERE id = q.id;
        END IF;
    END LOOP;
END
$$;
