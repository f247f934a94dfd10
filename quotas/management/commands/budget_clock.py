import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from horizon_quota.errors import ServiceError
from quotas.budgets import budget_clock_move, budget_now, clock_offset

_STEP = re.compile(r"([+-]?[0-9]+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_step(text: str) -> timedelta:
    """``32d``, ``6h``, ``90m``, ``45s`` or several at once (``1d12h``)."""
    text = text.strip().lower()
    steps = _STEP.findall(text)
    if not steps or "".join(f"{n}{u}" for n, u in steps) != text:
        raise CommandError(
            f"--advance takes an amount with a unit, e.g. 32d, 6h, 90m, 45s "
            f"(got {text!r})"
        )
    return sum(
        (timedelta(**{_UNITS[unit]: int(number)}) for number, unit in steps),
        timedelta(0),
    )


class Command(BaseCommand):
    help = (
        "Show or move the budget clock (DESIGN §3a): the time budgets take as now, "
        "for every process at once. Moving it is refused unless "
        "BUDGET_CLOCK_ADJUSTABLE=true (tests and rehearsals only). Leases keep the "
        "real clock."
    )

    def add_arguments(self, parser):
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--advance", metavar="AMOUNT", help="Move it forward: 32d, 6h, 90m, 45s."
        )
        action.add_argument(
            "--set", metavar="ISO_TIME", help="Set it, e.g. 2027-01-01T00:00:00Z."
        )
        action.add_argument(
            "--reset", action="store_true", help="Back to the database's clock."
        )
        action.add_argument("--show", action="store_true", help="Print it (default).")

    def handle(self, *args, advance, set, reset, show, **options):
        try:
            if advance:
                budget_clock_move(advance=parse_step(advance))
            elif set:
                moment = parse_datetime(set.strip())
                if moment is None or moment.tzinfo is None:
                    raise CommandError(
                        f"--set takes a time with its offset, e.g. "
                        f"2027-01-01T00:00:00Z (got {set!r})"
                    )
                budget_clock_move(to=moment)
            elif reset:
                budget_clock_move(reset=True)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        now = budget_now()
        self.stdout.write(
            f"budget clock: {now:%Y-%m-%dT%H:%M:%S%z} "
            f"(offset {clock_offset()} from the database's clock)"
        )
