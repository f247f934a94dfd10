"""The engine confines scoped keys and bounds one request's lock waits.

hq_check and hq_allocate take the key's scope (an entity) and answer an entity
outside it as if it had no quota, before writing anything; a conflicting or stale
allocation outside the scope is a bare conflict (hq_in_scope). hq_allocate and
hq_release share one lock budget across all their waits (hq_lock_budget).
"""

from django.db import migrations

from allocations.engine import InstallEngine


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0007_engine_from_sql_files"),
        ("quotas", "0008_api_key_entity_scope"),
    ]

    operations = [InstallEngine(digest="aa60b1e5599cff88")]
