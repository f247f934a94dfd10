-- The event sequencer (DESIGN §7a, P4), a deferred constraint trigger on events:
-- at the commit of a transaction that wrote events, after everything else it
-- did, it takes the sequencer (an advisory lock held until the commit ends, the
-- same key as quotas.events.services.SEQUENCER_KEY) and gives each new event its
-- public id, in the order they were written. So public ids are given in commit
-- order: once a reader sees event N, every event below N is committed, and a
-- consumer that reads `id > last` never misses or repeats one. The sequencer is
-- the last lock of any transaction (quotas/locking.py) and is held only for the
-- commit of transactions that wrote events, which are rare: edges, not
-- allocations.
CREATE OR REPLACE FUNCTION hq_sequence_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(72651004);
    UPDATE events SET id = nextval('events_public_id_seq')
     WHERE row_id = NEW.row_id AND id IS NULL;
    RETURN NULL;
END
$$;
