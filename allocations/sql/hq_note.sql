-- Note an event of this transaction, to be written by hq_emit when the engine
-- function that noted it ends (DESIGN §7a). The events wait in a transaction-local
-- setting (hq.events), one JSON document per line, so that the event sequencer,
-- which every event writer takes before it takes ids, is taken last, after every
-- quota row (quotas/locking.py). Nothing is noted for an allocate that crosses
-- nothing: the buffer stays empty and hq_emit returns at once.
CREATE OR REPLACE FUNCTION hq_note(p_type text, q quotas, p_data jsonb)
RETURNS void LANGUAGE sql AS $$
    SELECT set_config(
        'hq.events',
        coalesce(current_setting('hq.events', true), '')
            || json_build_object(
                   'type', p_type, 'quota_id', q.id, 'entity_type', q.entity_type,
                   'entity_id', q.entity_id, 'resource_type', q.resource_type,
                   'path', q.path, 'data', p_data)::text
            || chr(10),
        true)
$$;
