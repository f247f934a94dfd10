# A GIN index on quotas.path for API key scopes: path @> ARRAY[scope_id]
# (quotas/access/scoping.py). Built concurrently: quotas is read on every allocation.

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("quotas", "0005_quota_tree_order"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="quota",
            index=django.contrib.postgres.indexes.GinIndex(
                fields=["path"], name="quotas_path_gin"
            ),
        ),
    ]
