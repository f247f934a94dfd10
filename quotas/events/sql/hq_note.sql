-- Append an event about quota q to the outbox (DESIGN §7a), in the transaction
-- that caused it. Its public id is given at the commit (hq_sequence_event), so a
-- feed that reads `id > last` never misses one. An allocate that crosses nothing
-- calls none of this.
CREATE OR REPLACE FUNCTION hq_note(p_type text, q quotas, p_data jsonb)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO events (type, occurred_at, quota_id, entity_type, entity_id,
                        resource_type, path, data)
    VALUES (p_type, hq_now(), (q).id, (q).entity_type, (q).entity_id,
            (q).resource_type, (q).path, p_data)
$$;
