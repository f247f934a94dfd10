from django.core.management.base import BaseCommand
from django.db import DatabaseError

from allocations.services import allocations_expire, budgets_roll
from horizon_quota.commands import positive_int, positive_seconds, stop_on_signals


class Command(BaseCommand):
    help = (
        "Release every active allocation whose lease has run out (database clock) "
        "with status `expired` and an `expire` history row. Several copies may run "
        "at once: each allocation is expired, and counted, by exactly one. One pass, "
        "or with --loop a pass every SECONDS until SIGTERM or SIGINT (it stops "
        "between batches). Each pass also rolls over every budget whose period has "
        "ended (as `roll_budgets` does), so reports and the admin stay right without "
        "traffic. Exits 0, or 2 on a database error."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop",
            metavar="SECONDS",
            type=positive_seconds,
            help="Repeat, waiting SECONDS between passes, until SIGTERM or SIGINT.",
        )
        parser.add_argument(
            "--batch-size",
            metavar="N",
            type=positive_int,
            default=100,
            help="Allocations expired between two looks at the stop signal "
            "(default 100).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count the allocations that would expire; change nothing.",
        )

    def handle(self, *args, loop, batch_size, dry_run, **options):
        with stop_on_signals() as stop:
            try:
                while True:
                    count = allocations_expire(
                        batch_size=batch_size, dry_run=dry_run, should_stop=stop.is_set
                    )
                    if dry_run:
                        self.stdout.write(f"would expire {count} allocations (dry run)")
                    else:
                        rolled = budgets_roll(
                            batch_size=batch_size, should_stop=stop.is_set
                        )
                        self.stdout.write(
                            f"expired {count} allocations"
                            + (f", rolled over {rolled} budgets" if rolled else "")
                        )
                    # A supervisor reading our pipe sees each pass as it ends.
                    self.stdout.flush()
                    if loop is None or stop.wait(loop):
                        break
            except DatabaseError as exc:
                self.stderr.write(
                    f"cannot expire allocations: {exc.__class__.__name__}"
                )
                raise SystemExit(2) from None
