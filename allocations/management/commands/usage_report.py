import csv
import json

from django.core.management.base import BaseCommand, CommandError

from allocations.records import rfc3339
from allocations.reports import usage_report
from horizon_quota.amounts import amount_text
from horizon_quota.errors import ServiceError

COLUMNS = (
    "resource_type",
    "organization",
    "team",
    "entity_type",
    "entity_id",
    "consumed",
    "reserved",
)


def _cells(line, row: str) -> dict:
    return {
        "row": row,
        "resource_type": line.resource_type,
        "organization": line.organization,
        "team": line.team,
        "entity_type": line.entity_type,
        "entity_id": line.entity_id,
        "consumed": amount_text(line.consumed),
        "reserved": amount_text(line.reserved),
    }


class Command(BaseCommand):
    help = (
        "Chargeback: each entity's consumption in a calendar period (2026, 2026-Q4, "
        "2026-11, 2026-W48 or 2026-11-30, in BUDGET_TIMEZONE) and the reservations "
        "it still held when the period ended (or now), with subtotals per team and "
        "organization. Computed from the usage history alone: it works across budget "
        "periods and for deleted quotas. Read-only. Exit 0, 2 on bad arguments."
    )

    def add_arguments(self, parser):
        parser.add_argument("--period", required=True, help="e.g. 2026-11")
        parser.add_argument("--resource", metavar="SLUG", help="One resource type.")
        parser.add_argument(
            "--format", choices=("table", "csv", "json"), default="table"
        )

    def handle(self, *args, period, resource, format, **options):
        try:
            report = usage_report(period=period, resource_type=resource)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        rows = (
            [_cells(line, "entity") for line in report.lines]
            + [_cells(line, "team total") for line in report.subtotals("team")]
            + [
                _cells(line, "organization total")
                for line in report.subtotals("organization")
            ]
        )
        if format == "json":
            self.stdout.write(
                json.dumps(
                    {
                        "period": report.period,
                        "kind": report.kind,
                        "start": rfc3339(report.start),
                        "end": rfc3339(report.end),
                        "timezone": report.timezone,
                        "rows": rows,
                    },
                    indent=2,
                )
            )
        elif format == "csv":
            writer = csv.DictWriter(
                self.stdout, fieldnames=["row", *COLUMNS], lineterminator="\n"
            )
            writer.writeheader()
            writer.writerows(rows)
        else:
            self._table(report, rows)

    def _table(self, report, rows) -> None:
        self.stdout.write(
            f"usage in {report.period} ({rfc3339(report.start)} to "
            f"{rfc3339(report.end)}, {report.timezone})"
        )
        if not rows:
            self.stdout.write("No consumption and no open reservations.")
            return
        header = ["row", *COLUMNS]
        widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
        self.stdout.write(
            "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
        )
        for row in rows:
            self.stdout.write(
                "  ".join(
                    str(row[h]).ljust(w) for h, w in zip(header, widths, strict=True)
                ).rstrip()
            )
