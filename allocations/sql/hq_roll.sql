-- Roll level p_id over every period that has ended by p_now (DESIGN §3a), before
-- anything else touches it. The caller holds the row's lock, so each closed period
-- is recorded exactly once (budget_periods_once is the backstop); then the level
-- starts the current period with its carry-over and nothing consumed, its
-- reservations kept (running jobs keep them). Each closed period is noted as a
-- `budget.period_closed` event (hq_note). Returns the row as it now stands.
CREATE OR REPLACE FUNCTION hq_roll(p_id uuid, p_now timestamptz, p_tz text)
RETURNS quotas LANGUAGE plpgsql AS $$
DECLARE
    v_q quotas%ROWTYPE;
    v_closed record;
    v_last record;
BEGIN
    SELECT * INTO v_q FROM quotas WHERE id = p_id;
    FOR v_closed IN SELECT * FROM hq_closed_periods(v_q, p_now, p_tz) LOOP
        INSERT INTO budget_periods (quota_id, entity_type, entity_id, resource_type,
                                    period, period_start, period_end, limit_value,
                                    carried_over, consumed, carried_forward)
        VALUES (v_q.id, v_q.entity_type, v_q.entity_id, v_q.resource_type,
                v_q.period, v_closed.closed_start, v_closed.closed_end,
                v_q.limit_value, v_closed.began_with, v_closed.spent,
                v_closed.handed_on)
        ON CONFLICT (quota_id, period_start) DO NOTHING;
        PERFORM hq_note('budget.period_closed', v_q, jsonb_build_object(
            'period', v_q.period, 'period_start', v_closed.closed_start,
            'period_end', v_closed.closed_end, 'limit_value', v_q.limit_value,
            'carried_over', v_closed.began_with, 'consumed', v_closed.spent,
            'carried_forward', v_closed.handed_on));
        v_last := v_closed;
    END LOOP;
    IF v_last IS NULL THEN
        RETURN v_q;
    END IF;
    UPDATE quotas
       SET period_start = v_last.closed_end,
           period_end = hq_period_end(period, v_last.closed_end, p_tz),
           carried_over = v_last.handed_on,
           consumed = 0
     WHERE id = p_id
    RETURNING * INTO v_q;
    RETURN v_q;
END
$$;
