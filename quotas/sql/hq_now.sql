-- The budget clock (DESIGN §3a): the database's clock plus the offset that
-- `manage.py budget_clock` keeps in budget_clock (zero unless moved, which only
-- tests and rehearsals may do). Every budget decision reads it: which period a
-- charge falls in, when a period ends, the time of a history row. Leases keep
-- now(). It is the clock at the call (not the transaction's start), so two
-- operations in one transaction keep their order; the engine reads it once per
-- call.
CREATE OR REPLACE FUNCTION hq_now() RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
    SELECT clock_timestamp()
           + coalesce((SELECT offset_by FROM budget_clock WHERE id = 1), interval '0')
$$;
