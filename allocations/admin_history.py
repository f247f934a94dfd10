"""Usage history in the admin: read-only, built for a table of millions of rows
(see ``allocations.admin``), and its CSV export (the changelist's filters and
search: one quota, a subtree, an operation…), streamed."""

from django.contrib import admin
from django.db.models import Q
from django.urls import path, reverse
from django.utils.html import format_html

from allocations.admin import (
    QuotaFilter,
    ReadOnlyAdmin,
    ResourceTypeFilter,
    SubtreeFilter,
    _as_uuid,
)
from allocations.models import Allocation, UsageHistory
from horizon_quota.amounts import EMPTY, amount_display
from quotas.admin_console import export
from quotas.models import Quota

HISTORY_COLUMNS = [
    "id",
    "timestamp",
    "quota_id",
    "entity_type",
    "entity_id",
    "resource_type",
    "unit",
    "operation",
    "allocated_value",
    "consumed_delta",
    "job_id",
    "allocation_id",
]


def history_rows(rows):
    for row in rows.iterator(chunk_size=export.CHUNK):
        yield [
            str(row.id),
            row.timestamp,
            str(row.quota_id),
            row.entity_type,
            row.entity_id,
            row.resource_type,
            row.unit,
            row.operation,
            row.allocated_value,
            row.consumed_delta,
            str(row.job_id) if row.job_id else None,
            str(row.allocation_id) if row.allocation_id else None,
        ]


@admin.register(UsageHistory)
class UsageHistoryAdmin(ReadOnlyAdmin):
    list_display = [
        "quota_link",
        "when",
        "operation",
        "resource_type",
        "value",
        "charged",
        "job_short",
        "allocation_link",
    ]
    list_display_links = ["when"]
    list_filter = ["operation", ResourceTypeFilter, QuotaFilter, SubtreeFilter]
    list_select_related = False
    search_fields = ["job_id", "entity_id"]
    search_help_text = "An exact job, allocation or quota id, or an exact entity id."
    # history_quota_idx: (quota_id, -timestamp, -id), the only index of the table
    # besides its key (every index costs the allocate path a write). Each quota's
    # rows are newest first; filtered to one quota, the list is its timeline.
    ordering = ["quota_id", "-timestamp", "-id"]
    fields = [
        "id",
        "quota_link",
        "entity_type",
        "entity_id",
        "resource_type",
        "operation",
        "value",
        "job_id",
        "allocation_link",
        "timestamp",
        "metadata",
    ]
    readonly_fields = fields

    @admin.display(description="charged", ordering="consumed_delta")
    def charged(self, row):
        """What the row charged to a budget (consume, and the settle of a release
        or expiry)."""
        if not row.consumed_delta:
            return EMPTY
        return amount_display(row.consumed_delta, getattr(row, "unit", ""))

    def get_urls(self):
        return [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_view),
                name="allocations_usagehistory_export",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request):
        """The history changelist's rows as CSV: its filters and search (a quota, a
        subtree), every page, streamed."""
        return export.changelist_csv(
            self, request, "usage-history.csv", HISTORY_COLUMNS, history_rows
        )

    @admin.display(description="allocation")
    def allocation_link(self, row):
        if row.allocation_id is None:
            return EMPTY
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:allocations_allocation_change", args=[row.allocation_id]),
            str(row.allocation_id)[:8],
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # usage_history has no index on job_id or entity_id (each would cost every
        # allocate a write), so the search finds the quotas first, through indexes
        # of their own, and then reads only those quotas' rows of history_quota_idx.
        uuid = _as_uuid(term)
        if uuid is not None:
            # Allocations are never deleted, so they know every job's quota.
            quota_ids = set(
                Allocation.objects.filter(Q(job_id=uuid) | Q(id=uuid)).values_list(
                    "quota_id", flat=True
                )
            )
            of_the_job = Q(job_id=uuid) | Q(allocation_id=uuid)
            condition = (Q(quota_id__in=quota_ids) & of_the_job) | Q(quota_id=uuid)
        else:
            # The entity's quotas today (quotas_entity_id_idx); the history of a
            # deleted quota is found by its quota id or by a job id.
            quota_ids = set(
                Quota.objects.filter(entity_id=term).values_list("id", flat=True)
            )
            condition = Q(quota_id__in=quota_ids, entity_id=term)
        return queryset.filter(condition), False
