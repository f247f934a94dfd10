-- One request's lock waits share one budget (DATABASE_LOCK_TIMEOUT_MS): called
-- before each step that may wait for a lock, it sets lock_timeout to what is left
-- of the budget, so waiting at the user, then the team, then the organization adds
-- up to the budget at most, not three times it. A spent budget raises the same
-- error as a lock timeout (55P03), which the API answers 409 with Retry-After.
-- The caller's SET lock_timeout clause restores the session's value when it
-- returns. A null deadline means no budget.
CREATE OR REPLACE FUNCTION hq_lock_budget(p_deadline timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_left_ms bigint;
BEGIN
    IF p_deadline IS NULL THEN
        RETURN;
    END IF;
    v_left_ms := ceil(extract(epoch FROM p_deadline - clock_timestamp()) * 1000);
    IF v_left_ms <= 0 THEN
        RAISE EXCEPTION 'the lock budget of this request is spent'
              USING ERRCODE = 'lock_not_available';
    END IF;
    PERFORM set_config('lock_timeout', v_left_ms || 'ms', true);
END
$$;
