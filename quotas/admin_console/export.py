"""CSV exports for spreadsheets: streamed, so a big list never sits in memory.

Amounts are written exact and without trailing zeros, but without thousands
separators (``10000``, not ``10,000``): a spreadsheet reads them as numbers, in any
locale. The unit has its own column. An empty value is an empty cell.
"""

import csv
from collections.abc import Iterable, Iterator

from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.urls import reverse

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


# A text cell starting with one of these is a formula to a spreadsheet (CSV
# injection: an entity id "=HYPERLINK(…)" sent by an API client). Such text is
# written with a leading apostrophe, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    """One CSV cell: amounts exact (``amount_text``), nothing for None, text never
    read as a formula."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str):
        return f"'{value}" if value.startswith(FORMULA_STARTS) else value
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


def changelist_csv(model_admin, request, filename: str, header: list[str], rows):
    """The rows a changelist's filters and search select (every page, in its
    order) as CSV: ``rows`` turns its queryset into lists of cells. Filters the
    changelist refuses send the admin back to it, as the changelist itself does."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        changelist = model_admin.get_changelist_instance(request)
    except IncorrectLookupParameters:
        opts = model_admin.model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        return HttpResponseRedirect(f"{url}?{ERROR_FLAG}=1")
    return csv_response(filename, header, rows(changelist.get_queryset(request)))


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
