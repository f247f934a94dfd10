"""The admin's tree order: by resource type, then by the root-first path.

``quotas.path`` is leaf first (the allocation path). Reversed it is root first, and
ordering by that array lists every quota right after its parent and before its
parent's next child: a depth-first walk of the tree. ``hq_root_first`` reverses it;
it is IMMUTABLE so an index can hold its result, and the index below lets the quota
changelist read one page of the tree without sorting the table. The path never
changes after creation, so this index costs nothing on the hot path (updates of
``used`` stay HOT) and is written only when a quota is created.

The index is kept out of the model's state on purpose (the expression is a database
function; ``quotas.admin.RootFirstPath`` is the matching ORM expression).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0004_quota_change"),
    ]

    operations = [
        migrations.RunSQL(
            """
            CREATE FUNCTION hq_reverse_path(p_path uuid[]) RETURNS uuid[]
            LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
                SELECT ARRAY(
                    SELECT p_path[i]
                      FROM generate_subscripts(p_path, 1) AS i
                     ORDER BY i DESC
                )
            $$;
            -- A single expression, so PostgreSQL inlines it (in the index and in
            -- the query alike): the scan computes the sort key of every row it
            -- passes, an OFFSET's skipped rows too, and a function call with a
            -- subquery costs some 10 µs a row. Paths are at most three long
            -- (organization, team, user); hq_reverse_path covers any length. It is
            -- named with its schema because index builds run with a search_path
            -- of pg_catalog only.
            DO $do$ BEGIN EXECUTE format($fn$
                CREATE FUNCTION hq_root_first(p_path uuid[]) RETURNS uuid[]
                LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
                    SELECT CASE cardinality(p_path)
                        WHEN 1 THEN p_path
                        WHEN 2 THEN ARRAY[p_path[2], p_path[1]]
                        WHEN 3 THEN ARRAY[p_path[3], p_path[2], p_path[1]]
                        ELSE %I.hq_reverse_path(p_path)
                    END
                $$
            $fn$, current_schema()); END $do$;
            CREATE INDEX quotas_tree_idx
                ON quotas (resource_type, hq_root_first(path), id);
            """,
            """
            DROP INDEX quotas_tree_idx;
            DROP FUNCTION hq_root_first(uuid[]);
            DROP FUNCTION hq_reverse_path(uuid[]);
            """,
        ),
    ]
