from django.core.management.base import BaseCommand
from django.db import DatabaseError

from allocations.services import budgets_roll
from horizon_quota.commands import positive_int


class Command(BaseCommand):
    help = (
        "Roll over every budget whose period has ended (by the budget clock): record "
        "each closed period once and start the current one with its carry-over, "
        "without waiting for traffic to touch the budget. Several copies may run at "
        "once: each period is recorded exactly once. `expire_allocations --loop` "
        "does the same on each pass. Exits 0, or 2 on a database error."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            metavar="N",
            type=positive_int,
            default=100,
            help="Budgets rolled per batch (default 100).",
        )

    def handle(self, *args, batch_size, **options):
        try:
            rolled = budgets_roll(batch_size=batch_size)
        except DatabaseError as exc:
            self.stderr.write(f"cannot roll budgets: {exc.__class__.__name__}")
            raise SystemExit(2) from None
        self.stdout.write(f"rolled over {rolled} budgets")
