from uuid import UUID

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from allocations.selectors import orphan_allocations, usage_drift


class Command(BaseCommand):
    help = (
        "Verify promise P2 over the whole database (or one subtree): every quota's "
        "`used` equals the sum of the active allocations in its subtree. Prints each "
        "drift; exits 1 when any is found, 0 when the books are exact, 2 on error. "
        "Read-only."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--root", metavar="QUOTA_ID", type=UUID, help="Only this subtree."
        )

    def handle(self, *args, root, **options):
        try:
            drifts = usage_drift(root_id=root)
        except DatabaseError as exc:
            self.stderr.write(f"cannot verify usage: {exc.__class__.__name__}")
            raise SystemExit(2) from None
        orphans = [] if root else orphan_allocations()
        for drift in drifts:
            self.stdout.write(
                "drift: {entity_type} {entity_id} ({resource_type}, quota {quota_id}): "
                "stored {stored}, actual {actual}, delta {delta}".format(**drift)
            )
        for allocation_id, entity_type, entity_id, resource_type, value in orphans:
            self.stdout.write(
                f"orphan: active allocation {allocation_id} of {value} {resource_type} "
                f"for {entity_type} {entity_id} has no quota"
            )
        if drifts or orphans:
            self.stdout.write(f"{len(drifts)} quotas drifted, {len(orphans)} orphans.")
            raise SystemExit(1)
        self.stdout.write("Books exact: every quota's used matches its allocations.")
