-- The start of the budget period that holds p_at: calendar periods in the time
-- zone p_tz (BUDGET_TIMEZONE). ISO weeks start on Monday, quarters on 1 January,
-- April, July and October. A lifetime budget ('none') has no period bounds.
CREATE OR REPLACE FUNCTION hq_period_start(p_period text, p_at timestamptz, p_tz text)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_period = 'none' THEN NULL
                ELSE date_trunc(p_period, p_at, p_tz) END
$$;
