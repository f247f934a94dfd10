"""The second version of the engine's SQL functions (the path read from quotas.path).

Superseded by 0007, which installs the engine from its files in allocations/sql/
(allocations/engine.py). Databases migrated before 0007 ran this step; on a new
database it does nothing and 0007 creates every function.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0002_sql_functions"),
        ("quotas", "0003_quota_path"),
    ]

    operations = [
        migrations.RunPython(
            migrations.RunPython.noop, migrations.RunPython.noop, elidable=True
        )
    ]
