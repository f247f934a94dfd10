"""What a settle charges, in one function (hq_settle_value) that a release, an
expiry and a job's release all call, instead of the rule written twice."""

from django.db import migrations

from allocations.engine import InstallEngine


class Migration(migrations.Migration):
    dependencies = [("allocations", "0014_engine_admit_answer")]

    operations = [InstallEngine(digest="fba393810487f1f2")]
