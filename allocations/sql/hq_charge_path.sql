-- Charge every level of a path, leaf first (the lock order), refusing nothing:
-- reserved += p_reserve and consumed += p_consume at each, each in its own current
-- period. Returns the budget time the charge was made at, for the history row.
--
-- Consumption belongs to one period at every level, and the history row must fall
-- inside each of them (P2: a level's consumed is the sum of its subtree's history
-- since its period_start). If a level turns out to have been rolled over by a
-- transaction with a later clock (its period starts after p_now), the levels
-- charged so far are still locked by us: their charges are taken back, the time
-- moves to that period's start, and the walk starts again (rolling what has ended
-- by then). Each restart moves the time forward, so there are at most as many as
-- levels. Levels that no longer exist are passed over.
CREATE OR REPLACE FUNCTION hq_charge_path(
    p_path uuid[], p_reserve numeric, p_consume numeric, p_now timestamptz,
    p_tz text, p_deadline timestamptz, p_alerts numeric[]
) RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    v_row quotas%ROWTYPE;
    v_rows quotas[];
    i int;
BEGIN
    <<walk>>
    LOOP
        v_rows := '{}';
        FOR i IN 1 .. coalesce(cardinality(p_path), 0) LOOP
            PERFORM hq_lock_budget(p_deadline);
            v_row := hq_charge(p_path[i], p_reserve, p_consume, false, false,
                               p_now, p_tz);
            CONTINUE WHEN v_row.id IS NULL;
            IF p_consume <> 0 AND v_row.period_start > p_now THEN
                UPDATE quotas
                   SET reserved = reserved - p_reserve, consumed = consumed - p_consume
                 WHERE id = ANY (p_path[1:i]);
                p_now := v_row.period_start;
                CONTINUE walk;
            END IF;
            v_rows := v_rows || v_row;
        END LOOP;
        -- Usage went down (a release) or up (a consumption): alerts either way.
        PERFORM hq_alerts(v_rows, p_alerts);
        RETURN p_now;
    END LOOP;
END
$$;
