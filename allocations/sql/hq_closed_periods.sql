-- The budget periods of level q that have ended by p_now, oldest first, each as it
-- closes: its bounds, the carry-over it began with, what it consumed and what it
-- hands on: min(carryover_limit, max(0, limit_value + carried_over - consumed)).
-- The first holds q's consumption; a level idle through several periods closes
-- each later one with nothing consumed. Reads nothing, writes nothing.
CREATE OR REPLACE FUNCTION hq_closed_periods(q quotas, p_now timestamptz, p_tz text)
RETURNS TABLE (
    closed_start timestamptz, closed_end timestamptz, began_with numeric,
    spent numeric, handed_on numeric
) LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_start timestamptz := q.period_start;
    v_end timestamptz := q.period_end;
    v_carried numeric := q.carried_over;
    v_consumed numeric := q.consumed;
    v_next numeric;
BEGIN
    IF v_end IS NULL THEN
        RETURN;
    END IF;
    WHILE v_end <= p_now LOOP
        v_next := least(q.carryover_limit,
                        greatest(0, q.limit_value + v_carried - v_consumed));
        closed_start := v_start;
        closed_end := v_end;
        began_with := v_carried;
        spent := v_consumed;
        handed_on := v_next;
        RETURN NEXT;
        v_start := v_end;
        v_end := hq_period_end(q.period, v_start, p_tz);
        v_carried := v_next;
        v_consumed := 0;
    END LOOP;
END
$$;
