"""CSV exports for spreadsheets: streamed, so a big list never sits in memory.

Amounts are written exact and without trailing zeros, but without thousands
separators (``10000``, not ``10,000``): a spreadsheet reads them as numbers, in any
locale. The unit has its own column. An empty value is an empty cell.
"""

import csv
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse

from horizon_quota.amounts import amount_text
from quotas.models import Quota

# Rows fetched per round trip while streaming.
CHUNK = 2000

QUOTA_COLUMNS = [
    "id",
    "entity_type",
    "entity_id",
    "resource_type",
    "unit",
    "parent_id",
    "depth",
    "limit_value",
    "soft_limit",
    "burst_limit",
    "overcommit_ratio",
    "effective_limit",
    "used",
    "reserved",
    "consumed",
    "available",
    "utilization_percent",
    "period",
    "period_start",
    "period_end",
]


def cell(value) -> str:
    """One CSV cell: amounts exact (``amount_text``), nothing for None."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return amount_text(value)


class _Echo:
    """A file-like object whose write returns the line (csv.writer's output)."""

    def write(self, value):
        return value


def csv_response(
    filename: str, header: list[str], rows: Iterable[list]
) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def quota_rows(quotas) -> Iterator[list]:
    """The quotas (a queryset, already filtered and ordered) as CSV rows."""
    for quota in quotas.select_related("resource_type").iterator(chunk_size=CHUNK):
        yield quota_row(quota)


def quota_row(quota: Quota) -> list:
    return [
        str(quota.id),
        quota.entity_type,
        quota.entity_id,
        quota.resource_type_id,
        quota.resource_type.unit,
        str(quota.parent_id) if quota.parent_id else None,
        quota.depth,
        quota.limit_value,
        quota.soft_limit,
        quota.burst_limit,
        quota.overcommit_ratio,
        quota.effective_limit,
        quota.used,
        quota.reserved,
        quota.consumed,
        quota.available,
        quota.utilization_percent,
        quota.period,
        quota.period_start,
        quota.period_end,
    ]
