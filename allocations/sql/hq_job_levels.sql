-- Every resource's levels, as a JSON object keyed by resource type (leaf first
-- within each), as check and allocate report them (hq_levels).
CREATE OR REPLACE FUNCTION hq_job_levels(
    p_resources text[], p_amounts numeric[], p_leaves uuid[], p_allow_burst boolean,
    p_now timestamptz, p_tz text
) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT coalesce(
               json_object_agg(r.resource,
                               hq_levels(leaf.path, r.amount, p_allow_burst, p_now,
                                         p_tz)),
               '{}'::json)
      FROM unnest(p_resources, p_amounts, p_leaves) AS r(resource, amount, leaf_id)
      JOIN quotas leaf ON leaf.id = r.leaf_id
$$;
