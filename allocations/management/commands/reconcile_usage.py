from decimal import Decimal
from uuid import UUID

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from allocations.services import usage_reconcile
from horizon_quota.commands import positive_int
from horizon_quota.errors import ServiceError

COLUMNS = ("quota id", "entity", "resource", "stored", "actual", "delta")
NUMERIC = {"stored", "actual", "delta"}


def _amount(value: Decimal, *, signed: bool = False) -> str:
    text = f"{value.normalize():f}"
    return f"+{text}" if signed and value > 0 else text


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; silent otherwise."""

    WIDTH = 30

    def __init__(self, stream, *, enabled: bool, label: str):
        self.stream, self.enabled, self.label = stream, enabled, label
        self.drawn = False

    def update(self, done: int, total: int) -> None:
        if not self.enabled or not total:
            return
        filled = self.WIDTH * done // total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        # Plain: Django would style anything written to stderr as an error.
        self.stream.write(
            f"\r{self.label} [{bar}] {done}/{total}", style_func=str, ending=""
        )
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("", style_func=str)


class Command(BaseCommand):
    help = (
        "Recompute every quota's `used` (or one subtree's) from its active allocations "
        "and print each drift. With --fix, repair the drifted quotas in batches under "
        "the allocation path's row locks, recording each repair (UsageRepair). Exits 0 "
        "when no drift was found, 1 when drift was found (repaired or not), 2 on error."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--root", metavar="QUOTA_ID", type=UUID, help="Only this subtree."
        )
        parser.add_argument(
            "--fix", action="store_true", help="Repair the drifted quotas."
        )
        parser.add_argument(
            "--batch-size",
            metavar="N",
            type=positive_int,
            default=100,
            help="Leaf quotas repaired per transaction (default 100); a quota with "
            "children is repaired alone, so its row is held only while its own "
            "subtree is summed.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Report what --fix would repair; write nothing.",
        )
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="No progress bar (there is none when stderr is not a terminal).",
        )

    def handle(self, *args, root, fix, batch_size, dry_run, no_progress, **options):
        progress = ProgressBar(
            self.stderr,
            enabled=not no_progress and self.stderr.isatty(),
            label="repairing",
        )
        try:
            result = usage_reconcile(
                root_id=root,
                fix=fix,
                batch_size=batch_size,
                dry_run=dry_run,
                on_progress=progress.update,
            )
        except (DatabaseError, ServiceError) as exc:
            progress.close()
            detail = exc.message if isinstance(exc, ServiceError) else ""
            self.stderr.write(
                f"cannot reconcile usage: {detail or exc.__class__.__name__}"
            )
            raise SystemExit(2) from None
        progress.close()

        drifts = result.drifts
        if not drifts:
            self.stdout.write("No drift: every quota's used matches its allocations.")
            return
        self._print_table(drifts)
        found = f"{len(drifts)} quota{'' if len(drifts) == 1 else 's'} drifted"
        if result.fixed:
            summary = f"{found}; {len(result.repairs)} repaired"
            if len(result.repairs) < len(drifts):
                # Another run repaired them between our report and our lock.
                summary += f", {len(drifts) - len(result.repairs)} exact when locked"
            summary += f" (run {result.run_id})."
        elif fix:
            summary = f"{found}; dry run, nothing repaired."
        else:
            summary = f"{found}; --fix repairs them."
        self.stdout.write(summary)
        raise SystemExit(1)

    def _print_table(self, drifts: list[dict]) -> None:
        rows = [
            (
                str(drift["quota_id"]),
                f"{drift['entity_type']} {drift['entity_id']}",
                drift["resource_type"],
                _amount(drift["stored"]),
                _amount(drift["actual"]),
                _amount(drift["delta"], signed=True),
            )
            for drift in drifts
        ]
        widths = [
            max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))
        ]

        def line(cells):
            return "  ".join(
                cell.rjust(width) if name in NUMERIC else cell.ljust(width)
                for name, cell, width in zip(COLUMNS, cells, widths, strict=True)
            ).rstrip()

        self.stdout.write(line(COLUMNS))
        for row in rows:
            self.stdout.write(line(row))
