"""The engine admits jobs: several resources for one entity, all or nothing
(DESIGN §3b): hq_admit, hq_check_job and hq_release_job, which lock the rows of
every path in the one global order."""

from django.db import migrations

from allocations.engine import InstallEngine


class Migration(migrations.Migration):
    dependencies = [("allocations", "0011_usage_repair_both_forms")]

    operations = [InstallEngine(digest="36a1aeacbd95f7af")]
