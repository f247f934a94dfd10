-- Write the events noted in this transaction (hq_note) to the outbox, in the
-- transaction that caused them. The event sequencer (an advisory lock held until
-- the commit, the same key as quotas.events.services.SEQUENCER_KEY) is taken before
-- the ids, so events commit in id order and a feed that reads `id > last` never
-- misses one (DESIGN §7a, P4). It is the last lock the transaction takes.
CREATE OR REPLACE FUNCTION hq_emit() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_noted text := current_setting('hq.events', true);
BEGIN
    IF v_noted IS NULL OR v_noted = '' THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(72651004);
    INSERT INTO events (type, occurred_at, quota_id, entity_type, entity_id,
                        resource_type, path, data)
    SELECT e ->> 'type', hq_now(), (e ->> 'quota_id')::uuid, e ->> 'entity_type',
           e ->> 'entity_id', e ->> 'resource_type',
           ARRAY(SELECT jsonb_array_elements_text(e -> 'path'))::uuid[],
           e -> 'data'
      FROM regexp_split_to_table(rtrim(v_noted, chr(10)), chr(10))
               WITH ORDINALITY AS line(text, ord),
           LATERAL (SELECT line.text::jsonb AS e) event
     ORDER BY line.ord;
    PERFORM set_config('hq.events', '', true);
END
$$;
