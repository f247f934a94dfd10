"""hq_allocate answers `stale` for a key held by an allocation whose lease ran out.

Superseded by 0007, which installs the engine from its files in allocations/sql/
(allocations/engine.py). Databases migrated before 0007 ran this step; on a new
database it does nothing and 0007 creates every function.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("allocations", "0005_usage_repair")]

    operations = [
        migrations.RunPython(
            migrations.RunPython.noop, migrations.RunPython.noop, elidable=True
        )
    ]
