-- The moment a request's lock budget runs out, or null without one (0 ms).
CREATE OR REPLACE FUNCTION hq_deadline(p_budget_ms integer)
RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN coalesce(p_budget_ms, 0) > 0
                THEN clock_timestamp() + make_interval(secs => p_budget_ms / 1000.0)
           END
$$;
