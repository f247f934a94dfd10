"""The admin's tree order with siblings by entity id (issue 14).

``quotas_tree_idx`` ordered the tree by the root-first path of ids, so siblings
stood in the random order of their UUIDs (and differently under each resource
type). ``tree_key`` holds, root first, each level's entity (rank of its type, entity
id, id); a trigger fills it on insert (``quotas/sql/hq_tree_key.sql``), existing
rows are filled here level by level, and the index is rebuilt on it. Like the path,
the key never changes after creation: the index is written only when a quota is
created, and updates of ``used`` stay HOT.
"""

import django.contrib.postgres.fields
from django.db import migrations, models

from quotas.budgets import InstallQuotaFunctions


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0011_api_key_write_rate"),
    ]

    operations = [
        migrations.AddField(
            model_name="quota",
            name="tree_key",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.TextField(), default=list, editable=False, size=None
            ),
        ),
        InstallQuotaFunctions(digest="c35c37edc76e1217"),
        migrations.RunSQL(
            """
            CREATE TRIGGER quotas_tree_key BEFORE INSERT ON quotas
                FOR EACH ROW EXECUTE FUNCTION hq_tree_key();
            DO $$
            DECLARE v_depth integer;
            BEGIN
                FOR v_depth IN SELECT DISTINCT depth FROM quotas ORDER BY depth LOOP
                    UPDATE quotas q
                       SET tree_key = coalesce(p.tree_key, '{}'::text[])
                           || (CASE q.entity_type WHEN 'organization' THEN '0'
                                    WHEN 'team' THEN '1' ELSE '2' END
                               || ':' || q.entity_id || chr(1) || q.id::text)
                      FROM quotas q2 LEFT JOIN quotas p ON p.id = q2.parent_id
                     WHERE q.id = q2.id AND q.depth = v_depth;
                END LOOP;
            END $$;
            DROP INDEX quotas_tree_idx;
            CREATE INDEX quotas_tree_idx ON quotas (resource_type, tree_key, id);
            """,
            """
            DROP INDEX quotas_tree_idx;
            CREATE INDEX quotas_tree_idx
                ON quotas (resource_type, hq_root_first(path), id);
            DROP TRIGGER quotas_tree_key ON quotas;
            """,
        ),
    ]
