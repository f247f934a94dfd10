-- The admin's tree order (quotas.tree_key, filled on insert by this trigger): one
-- element per level, root first, each "<rank>:<entity_id><U+0001><id>". Ordered by
-- it, every quota follows its parent and precedes its parent's next child (a
-- depth-first walk), and siblings stand in the order of `manage.py quota_tree`:
-- organizations, then teams, then users (the rank), each by entity id, the id
-- breaking ties. The parent and the entity never change after creation, so the
-- key is written once and the hot path's updates of `used` never touch it.
CREATE OR REPLACE FUNCTION hq_tree_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tree_key := coalesce((SELECT q.tree_key FROM quotas q WHERE q.id = NEW.parent_id),
                             '{}'::text[])
        || (CASE NEW.entity_type WHEN 'organization' THEN '0' WHEN 'team' THEN '1'
                 ELSE '2' END
            || ':' || NEW.entity_id || chr(1) || NEW.id::text);
    RETURN NEW;
END
$$;
