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
from django.contrib.admin.views.main import ChangeList
from django.db.models import OuterRef, Q, Subquery
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from allocations.exceptions import AlreadyReleased
from allocations.models import Allocation, AllocationStatus
from allocations.records import render_allocation, render_job
from allocations.services import allocation_release, jobs
from horizon_quota.admin_paging import EstimatedCountPaginator
from horizon_quota.amounts import EMPTY, amount_display
from horizon_quota.errors import NotFound, ServiceError
from quotas.admin_console import moment
from quotas.models import Quota, ResourceType


def short_id(value) -> str:
    """A UUID shortened to its first block; the whole of it on hover, and all of it
    copied when selected (the rest is hidden by CSS, not cut)."""
    if value is None:
        return EMPTY
    return format_html('<span class="hq-id" title="{0}">{0}</span>', value)


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

    def label(self, quota, value) -> str:
        return str(quota) if quota else f"quota {value} (deleted)"

    def narrow(self, queryset, quota_id):
        return queryset.filter(quota_id=quota_id)

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
        return [(value, self.label(quota, value))]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        quota_id = _as_uuid(self.value())
        if quota_id is None:
            # The changelist answers this with its "?e=1" page.
            raise IncorrectLookupParameters(f"{self.value()!r} is not a quota id")
        return self.narrow(queryset, quota_id)


class SubtreeFilter(QuotaFilter):
    """The rows of a quota's whole subtree, as linked from a team's or an
    organization's page (history lives on the users' quotas). It appears only
    while set. The subtree through quotas_path_gin, then each quota's rows
    through the table's index leading on quota_id."""

    title = "subtree"
    parameter_name = "subtree"

    def label(self, quota, value) -> str:
        return f"{quota} and below" if quota else f"quota {value}"

    def narrow(self, queryset, quota_id):
        return queryset.filter(
            quota_id__in=Quota.objects.filter(path__contains=[quota_id]).values("id")
        )


class UnitsChangeList(ChangeList):
    """Each row's unit, from the resource type (a small table), by a subquery on the
    page's rows: the rows themselves stay unjoined."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.annotate(
            unit=Subquery(
                ResourceType.objects.filter(slug=OuterRef("resource_type")).values(
                    "unit"
                )[:1]
            )
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted here."""

    paginator = EstimatedCountPaginator
    # The console's styles: shortened ids, numbers, rows that do not wrap.
    change_list_template = "admin/allocations/wide_change_list.html"

    class Media:
        css = {"all": ["quotas/admin_console.css"]}

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

    def get_changelist(self, request, **kwargs):
        return UnitsChangeList

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
        return amount_display(row.allocated_value, getattr(row, "unit", ""))

    @admin.display(description="job")
    def job_short(self, row):
        return short_id(row.job_id)

    @admin.display(description="allocated at", ordering="allocated_at")
    def allocated(self, row):
        return moment(row.allocated_at)

    @admin.display(description="released at", ordering="released_at")
    def released(self, row):
        return moment(row.released_at)

    @admin.display(description="lease ends", ordering="expires_at")
    def expires(self, row):
        return moment(row.expires_at)

    @admin.display(description="time", ordering="timestamp")
    def when(self, row):
        return moment(row.timestamp)


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyAdmin):
    # Job ids are shortened (the whole id on hover, and selected whole with one
    # click, for copying); the time opens the allocation.
    list_display = [
        "allocated",
        "job_short",
        "quota_link",
        "resource_type",
        "value",
        "status",
        "released",
        "expires",
        "burst",
    ]
    list_display_links = ["allocated"]
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
        "rate_display",
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
        return amount_display(row.consumed_value, getattr(row, "unit", ""))

    @admin.display(description="rate (per hour)")
    def rate_display(self, row):
        return amount_display(row.rate, getattr(row, "unit", ""))

    @admin.display(description="burst", boolean=True, ordering="is_burst")
    def burst(self, row):
        return row.is_burst

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
                units = dict(ResourceType.objects.values_list("slug", "unit"))
                context["allocations"] = [
                    {
                        **render_allocation(a),
                        "short_id": str(a.id)[:8],
                        "allocated_value": amount_display(
                            a.allocated_value, units.get(a.resource_type, "")
                        ),
                        "consumed_value": amount_display(
                            a.consumed_value, units.get(a.resource_type, "")
                        ),
                    }
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


# Usage history, and what this app adds to the quota console (the quota page's
# panels, the dashboard's figures), live in modules of their own; importing them
# registers them.
from allocations import admin_history, admin_panels  # noqa: E402, F401
