-- Charge one level of a path: reserved += p_reserve, consumed += p_consume, in the
-- level's period current at p_now. With p_fit, only if the level then stays within
-- its cap (the admission predicate of DESIGN §3, used + requested <= cap); without,
-- it never refuses (consumption and releases are never refused).
--
-- The lock and the predicate are one conditional UPDATE by id, the row locked from
-- here to the commit (quotas/locking.py). A level whose period has ended is rolled
-- over first, under the same lock (hq_roll), and charged in its new period.
-- Returns the updated row, or a row of nulls when the level refused or is gone.
CREATE OR REPLACE FUNCTION hq_charge(
    p_id uuid, p_reserve numeric, p_consume numeric, p_fit boolean,
    p_allow_burst boolean, p_now timestamptz, p_tz text
) RETURNS quotas LANGUAGE plpgsql AS $$
DECLARE
    v_row quotas%ROWTYPE;
    v_end timestamptz;
BEGIN
    UPDATE quotas q
       SET reserved = q.reserved + p_reserve, consumed = q.consumed + p_consume
     WHERE q.id = p_id
       AND (q.period_end IS NULL OR q.period_end > p_now)
       AND (NOT p_fit
            OR hq_fits(q.used, p_reserve + p_consume,
                       hq_cap(q.limit_value, q.burst_limit, q.overcommit_ratio,
                              p_allow_burst, q.carried_over)))
    RETURNING q.* INTO v_row;
    IF FOUND THEN
        RETURN v_row;
    END IF;
    -- Refused, gone, or its period has ended. A level without periods can only
    -- have refused (or be gone): that is settled without a lock, so a full
    -- organization does not serialize the requests it turns away.
    SELECT period_end INTO v_end FROM quotas WHERE id = p_id;
    IF NOT FOUND OR v_end IS NULL THEN
        RETURN NULL;
    END IF;
    -- A budget with periods: decide under the lock, rolling it over first if its
    -- period has ended by p_now (another transaction may have done so already).
    SELECT * INTO v_row FROM quotas WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_row.period_end <= p_now THEN
        PERFORM hq_roll(p_id, p_now, p_tz);
    END IF;
    UPDATE quotas q
       SET reserved = q.reserved + p_reserve, consumed = q.consumed + p_consume
     WHERE q.id = p_id
       AND (NOT p_fit
            OR hq_fits(q.used, p_reserve + p_consume,
                       hq_cap(q.limit_value, q.burst_limit, q.overcommit_ratio,
                              p_allow_burst, q.carried_over)))
    RETURNING q.* INTO v_row;
    RETURN v_row;
END
$$;
