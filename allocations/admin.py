"""Allocations and usage history in the admin: read-only, built for big tables.

Rows are written only by the allocation engine (``allocations.services``); here they
are listed and inspected, and active allocations can be released through the same
service the API uses.

Both tables grow to millions of rows, so every changelist here:

* orders by the columns of an existing index (a page is an index range, not a sort
  of the table);
* counts with ``EstimatedCountPaginator`` and never counts the unfiltered table
  for the "N total" hint (``show_full_result_count = False``) nor for facets;
* searches with exact, indexed lookups (a UUID: job, allocation or quota id; any
  other term: an entity id), never ``ILIKE '%…%'`` over the table;
* shows the entity from the row itself, never joining ``quotas``: the rows outlive
  their quota (no foreign key in the database), and an inner join would hide them.

No ``date_hierarchy``: with no index leading on the timestamp, its year and month
links need a scan of the whole table (``SELECT DISTINCT date_trunc(…)``) on every
page.
"""

from uuid import UUID

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from allocations.exceptions import AlreadyReleased
from allocations.models import Allocation, AllocationStatus, UsageHistory
from allocations.records import render_allocation, render_job
from allocations.services import allocation_release, jobs
from horizon_quota.admin_paging import EstimatedCountPaginator
from horizon_quota.amounts import amount_text, normalize_amount
from horizon_quota.errors import NotFound, ServiceError
from quotas import admin_console
from quotas.models import Quota, ResourceType


def _as_uuid(term: str) -> UUID | None:
    try:
        return UUID(term.strip())
    except ValueError:
        return None


class ResourceTypeFilter(admin.SimpleListFilter):
    """By resource type, listing the registered types (a small table) rather than
    Django's default for a plain column, ``SELECT DISTINCT`` over the big one."""

    title = "resource type"
    parameter_name = "resource_type"

    def lookups(self, request, model_admin):
        return list(ResourceType.objects.order_by("slug").values_list("slug", "slug"))

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(resource_type=self.value())
        return queryset


class QuotaFilter(admin.SimpleListFilter):
    """The quota a list is narrowed to, as linked from the quota's change page. It
    appears only while set; ``quota__id__exact`` is the parameter Django's own
    related-field filter would use."""

    title = "quota"
    parameter_name = "quota__id__exact"

    def lookups(self, request, model_admin):
        value = self.value()
        if not value:
            return []
        quota_id = _as_uuid(value)
        quota = (
            Quota.objects.filter(id=quota_id)
            .only("entity_type", "entity_id", "resource_type")
            .first()
            if quota_id
            else None
        )
        return [(value, str(quota) if quota else f"quota {value} (deleted)")]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        quota_id = _as_uuid(self.value())
        if quota_id is None:
            # The changelist answers this with its "?e=1" page.
            raise IncorrectLookupParameters(f"{self.value()!r} is not a quota id")
        return queryset.filter(quota_id=quota_id)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted here."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="entity")
    def entity(self, row):
        return f"{row.entity_type}:{row.entity_id}"

    @admin.display(description="quota")
    def quota_link(self, row):
        # By id only: no join, and the link still names a quota that is gone.
        return format_html(
            '<a href="{}">{}:{}</a>',
            reverse("admin:quotas_quota_change", args=[row.quota_id]),
            row.entity_type,
            row.entity_id,
        )

    @admin.display(description="value", ordering="allocated_value")
    def value(self, row):
        return normalize_amount(row.allocated_value)


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyAdmin):
    list_display = [
        "job_id",
        "quota_link",
        "resource_type",
        "value",
        "status",
        "allocated_at",
        "released_at",
        "expires_at",
        "is_burst",
    ]
    list_display_links = ["job_id"]
    list_filter = ["status", ResourceTypeFilter, "is_burst", QuotaFilter]
    # The entity is copied onto the row: nothing to join (see the module docstring).
    list_select_related = False
    search_fields = ["job_id", "entity_id"]
    search_help_text = "An exact job, allocation or quota id, or an exact entity id."
    # alloc_allocated_idx: (-allocated_at, -id); with a quota filter,
    # alloc_quota_idx: (quota_id, -allocated_at, -id).
    ordering = ["-allocated_at", "-id"]
    actions = ["release_selected"]
    fields = [
        "id",
        "quota_link",
        "entity_type",
        "entity_id",
        "job_link",
        "resource_type",
        "value",
        "consumed",
        "rate",
        "status",
        "allocated_at",
        "released_at",
        "expires_at",
        "is_burst",
        "version",
        "metadata",
    ]
    readonly_fields = fields

    @admin.display(description="job")
    def job_link(self, row):
        return format_html(
            '<a href="{}?job_id={}">{}</a> (all its resources)',
            reverse("admin:allocations_allocation_job"),
            row.job_id,
            row.job_id,
        )

    @admin.display(description="consumed")
    def consumed(self, row):
        return normalize_amount(row.consumed_value)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # alloc_job_idx, the primary key and alloc_quota_idx; alloc_entity_idx.
        uuid = _as_uuid(term)
        if uuid is not None:
            condition = Q(job_id=uuid) | Q(id=uuid) | Q(quota_id=uuid)
        else:
            condition = Q(entity_id=term)
        return queryset.filter(condition), False

    def get_urls(self):
        # The job view: one job's allocations across resources, and its release.
        return [
            path(
                "job/",
                self.admin_site.admin_view(self.job_view),
                name="allocations_allocation_job",
            ),
            *super().get_urls(),
        ]

    def job_view(self, request):
        """Search a job by id; show its allocations across resources; release it
        (through the same service as the API)."""
        job_id = (request.POST.get("job_id") or request.GET.get("job_id") or "").strip()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Job",
            "job_id": job_id,
            "can_release": self.has_release_permission(request),
        }
        if job_id:
            job = _as_uuid(job_id)
            try:
                if job is None:
                    raise NotFound(f"{job_id!r} is not a job id.")
                if request.method == "POST" and context["can_release"]:
                    released = jobs.job_release(job_id=job)
                    self.message_user(
                        request,
                        f"Job {job}: {len(released.allocations)} allocation(s) "
                        "released.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(f"{request.path}?job_id={job}")
                result = jobs.job_get(job_id=job)
            except ServiceError as exc:
                context["error"] = exc.message
            else:
                context["job"] = render_job(result.job_id, result.allocations)
                context["allocations"] = [
                    {**render_allocation(a), "short_id": str(a.id)[:8]}
                    for a in result.allocations
                ]
                context["active"] = any(
                    a.status == AllocationStatus.ACTIVE for a in result.allocations
                )
        return TemplateResponse(
            request, "admin/allocations/allocation/job.html", context
        )

    def has_release_permission(self, request):
        # Releasing changes the books: it takes the change permission of the model
        # (rows themselves are never edited here).
        return request.user.has_perm("allocations.change_allocation")

    @admin.action(description="Release selected allocations", permissions=["release"])
    def release_selected(self, request, queryset):
        released = already = 0
        # Each release is its own short transaction in the engine, returning the
        # amount to every level of the path exactly once; one that lost a race with
        # another release (or the lease sweeper) reports AlreadyReleased.
        for allocation_id, status in queryset.values_list("id", "status"):
            if status != AllocationStatus.ACTIVE:
                already += 1
                continue
            try:
                allocation_release(allocation_id=allocation_id)
            except (AlreadyReleased, NotFound):
                already += 1
            else:
                released += 1
        self.message_user(
            request,
            f"{released} released, {already} already released.",
            messages.SUCCESS if released else messages.WARNING,
        )


@admin.register(UsageHistory)
class UsageHistoryAdmin(ReadOnlyAdmin):
    list_display = [
        "quota_link",
        "timestamp",
        "operation",
        "resource_type",
        "value",
        "job_id",
        "allocation_link",
    ]
    list_display_links = ["timestamp"]
    list_filter = ["operation", ResourceTypeFilter, QuotaFilter]
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

    @admin.display(description="allocation")
    def allocation_link(self, row):
        if row.allocation_id is None:
            return "—"
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


def quota_page_panels(quota: Quota) -> dict:
    """The allocation panels of a quota's change page (``quotas.admin_console``):
    its latest active allocations and its recent usage history, two bounded
    queries."""
    # alloc_quota_active_idx serves this one: active rows of one quota, newest first.
    allocations, more_allocations = admin_console.bounded(
        Allocation.objects.filter(
            quota_id=quota.id, status=AllocationStatus.ACTIVE
        ).order_by("-allocated_at", "-id")
    )
    # history_quota_idx: (quota_id, -timestamp, -id).
    history, more_history = admin_console.bounded(
        UsageHistory.objects.filter(quota_id=quota.id).order_by("-timestamp", "-id")
    )
    return {
        "allocations": [
            {
                "id": allocation.id,
                "job_id": allocation.job_id,
                "value": amount_text(allocation.allocated_value),
                "allocated_at": allocation.allocated_at,
                "expires_at": allocation.expires_at,
                "is_burst": allocation.is_burst,
            }
            for allocation in allocations
        ],
        "more_allocations": more_allocations,
        "allocations_url": admin_console.changelist_url(
            Allocation, quota__id__exact=quota.id, status__exact="active"
        ),
        "history": [
            {
                "timestamp": row.timestamp,
                "operation": row.operation,
                "value": amount_text(row.allocated_value),
                "job_id": row.job_id,
            }
            for row in history
        ],
        "more_history": more_history,
        "history_url": admin_console.changelist_url(
            UsageHistory, quota__id__exact=quota.id
        ),
    }


admin_console.PANEL_PROVIDERS.append(quota_page_panels)
