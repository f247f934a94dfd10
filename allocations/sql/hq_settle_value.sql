-- What settling an allocation charges in all (DESIGN §3a), for a release, an
-- expiry or a job's release: on a concurrent resource nothing (and a reported
-- value is `not_time_based`); else the reported cumulative value (below what was
-- already reported: `below_reported`); else `rate × hours held` (by the budget
-- clock, from when the allocation started in budget time); else the whole
-- reservation; never less than what was already reported. `outcome` is null when
-- the value stands.
CREATE OR REPLACE FUNCTION hq_settle_value(
    p_alloc allocations, p_reported numeric, p_now timestamptz,
    OUT outcome text, OUT final numeric
) LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM resource_types
                    WHERE slug = p_alloc.resource_type AND kind = 'time_based') THEN
        IF p_reported IS NOT NULL THEN
            outcome := 'not_time_based';
        END IF;
        final := 0;
    ELSIF p_reported IS NOT NULL THEN
        IF p_reported < p_alloc.consumed_value THEN
            outcome := 'below_reported';
        END IF;
        final := p_reported;
    ELSIF p_alloc.rate IS NOT NULL THEN
        final := greatest(p_alloc.consumed_value, round(p_alloc.rate * greatest(
            0, extract(epoch FROM p_now - coalesce(p_alloc.budget_started_at,
                                                   p_alloc.allocated_at)) / 3600),
            4));
    ELSE
        final := greatest(p_alloc.consumed_value, p_alloc.allocated_value);
    END IF;
END
$$;
