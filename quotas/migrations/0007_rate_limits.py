"""Per-key write counters for horizon_quota.throttling.ApiKeyWriteThrottle.

UNLOGGED: the counters are not worth WAL. After a crash PostgreSQL empties the table,
which only gives every key a fresh window. No model: the throttle speaks SQL to it,
and the table holds at most one live window per key (each write deletes its key's
past windows in the same statement).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0006_quota_path_gin"),
    ]

    operations = [
        migrations.RunSQL(
            """
            CREATE UNLOGGED TABLE rate_limits (
                key_id bigint NOT NULL,
                window_start bigint NOT NULL,
                count integer NOT NULL,
                PRIMARY KEY (key_id, window_start)
            );
            """,
            reverse_sql="DROP TABLE rate_limits;",
        ),
    ]
