-- Level q as it will stand once every period that has ended by p_now is rolled
-- over: the current period's bounds, its carry-over, nothing consumed yet, the
-- reservations kept. Used by check, which evaluates the allocate predicate on the
-- levels as allocate would find them, without writing.
CREATE OR REPLACE FUNCTION hq_rolled(q quotas, p_now timestamptz, p_tz text)
RETURNS quotas LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_last record;
BEGIN
    SELECT * INTO v_last FROM hq_closed_periods(q, p_now, p_tz)
     ORDER BY closed_start DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN q;
    END IF;
    q.period_start := v_last.closed_end;
    q.period_end := hq_period_end(q.period, v_last.closed_end, p_tz);
    q.carried_over := v_last.handed_on;
    q.consumed := 0;
    q.used := q.reserved;
    RETURN q;
END
$$;
