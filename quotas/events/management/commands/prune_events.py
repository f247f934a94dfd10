from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError

from horizon_quota.commands import positive_int
from quotas.events.pruning import events_prune


class Command(BaseCommand):
    help = (
        "Delete events older than EVENT_RETENTION_DAYS (or --days), their webhook "
        "deliveries, and delivery log entries older than that. In batches; several "
        "copies may run at once (rows another holds are left for later). Exits 0, "
        "or 2 on a database error."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            metavar="N",
            type=positive_int,
            help="Keep the last N days (default EVENT_RETENTION_DAYS).",
        )
        parser.add_argument(
            "--batch-size",
            metavar="N",
            type=positive_int,
            default=1000,
            help="Rows deleted per transaction (default 1000).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be deleted; delete nothing.",
        )

    def handle(self, *args, days, batch_size, dry_run, **options):
        days = days or settings.EVENT_RETENTION_DAYS
        try:
            counts = events_prune(days=days, batch_size=batch_size, dry_run=dry_run)
        except DatabaseError as exc:
            self.stderr.write(f"cannot prune events: {exc.__class__.__name__}")
            raise SystemExit(2) from None
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"{verb} {counts['events']} events, {counts['deliveries']} deliveries "
            f"and {counts['attempts']} delivery log entries older than {days} days"
            + (" (dry run)" if dry_run else "")
        )
