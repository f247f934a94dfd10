"""The engine's functions, installed from their files in allocations/sql/.

Until now each engine migration carried the functions' text, and 0006 patched
0003's text with string replacements; the live engine was readable nowhere. From
here on the files are the one source of truth (allocations/engine.py): this
migration drops the functions of migrations 0002 to 0006 and creates them from the
files, with the same behaviour. Every later change to a file comes with a migration
that runs InstallEngine again.
"""

from django.db import migrations

from allocations.engine import InstallEngine


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0006_allocate_reports_run_out_leases"),
        ("quotas", "0007_rate_limits"),
    ]

    operations = [InstallEngine(digest="bcc90cc12f86c5c6")]
