"""A job's admission answers with the rows it charged and the allocations it
inserted, rather than reading them again (hq_admit; issue #11's benchmark)."""

from django.db import migrations

from allocations.engine import InstallEngine


class Migration(migrations.Migration):
    dependencies = [("allocations", "0013_engine_events")]

    operations = [InstallEngine(digest="9ac7825d17272239")]
