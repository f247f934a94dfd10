"""The engine consumes budgets (DESIGN §3a).

Allocate reserves; hq_consume charges a running job's consumption; release and
expiry settle a time-based allocation; every level is rolled over to its current
period, under its lock, before anything else touches it (hq_charge, hq_roll), and
consumption is charged to one period at every level (hq_charge_path). History rows
carry consumed_delta and the budget clock's time.
"""

from django.db import migrations

from allocations.engine import InstallEngine


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0009_budgets"),
        ("quotas", "0009_budgets"),
    ]

    operations = [InstallEngine(digest="e181c33d57f21d7b")]
