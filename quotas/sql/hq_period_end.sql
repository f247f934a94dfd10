-- The end of the budget period that starts at p_start (the next period's start):
-- one calendar day, week, month, quarter or year later in the time zone p_tz, so a
-- day across a daylight-saving change is 23 or 25 hours long.
CREATE OR REPLACE FUNCTION hq_period_end(p_period text, p_start timestamptz, p_tz text)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT ((p_start AT TIME ZONE p_tz)
            + CASE p_period WHEN 'day' THEN interval '1 day'
                            WHEN 'week' THEN interval '7 days'
                            WHEN 'month' THEN interval '1 month'
                            WHEN 'quarter' THEN interval '3 months'
                            WHEN 'year' THEN interval '1 year' END)
           AT TIME ZONE p_tz
$$;
