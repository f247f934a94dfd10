from django.core.management.base import BaseCommand
from django.db import DatabaseError

from horizon_quota.commands import positive_int, positive_seconds, stop_on_signals
from quotas.events.delivery import webhooks_deliver


class Command(BaseCommand):
    help = (
        "Deliver events to the enabled webhook endpoints (DESIGN §7a): queue each "
        "new event for every endpoint that wants it, then make every due attempt, "
        "signed per Standard Webhooks, retrying failures with exponential backoff "
        "(WEBHOOK_RETRY_BASE_SECONDS) for WEBHOOK_RETRY_HOURS. Several copies may "
        "run at once: each attempt is made by exactly one. One pass, or with --loop "
        "a pass every --interval seconds until SIGTERM or SIGINT (it stops between "
        "attempts). Exits 0, or 2 on a database error."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop",
            action="store_true",
            help="Repeat until SIGTERM or SIGINT.",
        )
        parser.add_argument(
            "--interval",
            metavar="SECONDS",
            type=positive_seconds,
            default=1.0,
            help="With --loop, the wait between two passes (default 1).",
        )
        parser.add_argument(
            "--batch-size",
            metavar="N",
            type=positive_int,
            default=100,
            help="Attempts made between two looks at the stop signal (default 100).",
        )

    def handle(self, *args, loop, interval, batch_size, **options):
        with stop_on_signals() as stop:
            try:
                while True:
                    summary = webhooks_deliver(
                        batch_size=batch_size, should_stop=stop.is_set
                    )
                    self.stdout.write(str(summary))
                    # A supervisor reading our pipe sees each pass as it ends.
                    self.stdout.flush()
                    if not loop or stop.wait(interval):
                        break
            except DatabaseError as exc:
                self.stderr.write(f"cannot deliver webhooks: {exc.__class__.__name__}")
                raise SystemExit(2) from None
