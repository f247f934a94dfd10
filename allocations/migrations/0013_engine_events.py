"""The engine writes events (DESIGN §7a): threshold alerts of every level it
charges, overruns and expiries of allocations and closed budget periods, in the
transaction that caused them (hq_alerts, hq_allocation_events, hq_emit)."""

from django.db import migrations

from allocations.engine import InstallEngine


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0012_engine_jobs"),
        ("events", "0002_event_functions"),
    ]

    operations = [InstallEngine(digest="4251b2f2941d78f1")]
