from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path

from horizon_quota.admin_paging import EstimatedCountPaginator
from horizon_quota.amounts import EMPTY, amount_display, normalize_amount
from horizon_quota.errors import ServiceError
from quotas import admin_console, services
from quotas.admin_console import dashboard, export
from quotas.models import REASON_MAX_LENGTH, Quota, ResourceType

QUOTA_FORM_FIELDS = [
    "entity_type",
    "entity_id",
    "resource_type",
    "parent",
    "limit_value",
    "soft_limit",
    "burst_limit",
    "overcommit_ratio",
    "period",
    "carryover_limit",
    "alert_thresholds",
]


AMOUNT_FIELDS = [
    "limit_value",
    "soft_limit",
    "burst_limit",
    "overcommit_ratio",
    "carryover_limit",
]


def _as_form_error(exc: ServiceError) -> ValidationError:
    """Map a service error onto the admin form: per field where it names one."""
    if not exc.fields:
        return ValidationError(exc.message)
    mapped = {}
    for field, messages_ in exc.fields.items():
        name = "parent" if field == "parent_id" else field
        mapped[name if name in QUOTA_FORM_FIELDS else "__all__"] = messages_
    return ValidationError(mapped)


@admin.register(ResourceType)
class ResourceTypeAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "unit", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["slug", "name"]

    def get_readonly_fields(self, request, obj=None):
        # The slug is the key quotas refer to; it never changes once created.
        return ["slug", "created_at"] if obj else ["created_at"]


class QuotaAdminForm(forms.ModelForm):
    force = forms.BooleanField(
        required=False,
        help_text="Allow lowering the limit below current usage.",
    )
    reason = forms.CharField(
        required=False,
        max_length=REASON_MAX_LENGTH,
        help_text="Why you make this change; kept in the quota's audit trail.",
    )
    # Who saves the form; QuotaAdmin.get_form sets it to the staff user. Without it
    # the change is recorded as the system's.
    actor: services.Actor | None = None

    class Meta:
        model = Quota
        fields = QUOTA_FORM_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A budget's settings are optional: no period, nothing carried over.
        for name, help_text in (
            (
                "period",
                "Time-based resources only: how often the budget starts "
                "afresh (calendar periods in BUDGET_TIMEZONE).",
            ),
            (
                "carryover_limit",
                "Time-based resources only: unused budget that "
                "moves into the next period, at most the limit.",
            ),
            (
                "alert_thresholds",
                "Percents of the cap at which alerts are raised, comma separated "
                "(e.g. 50,80,100); empty for the server's default.",
            ),
        ):
            if name in self.fields:
                self.fields[name].required = False
                self.fields[name].help_text = help_text
        # Amounts as people write them: 30, not 30.0000 (the stored scale).
        if not self.is_bound:
            for name in AMOUNT_FIELDS:
                value = self.initial.get(name)
                if isinstance(value, Decimal):
                    self.initial[name] = normalize_amount(value)

    def _post_clean(self):
        # Skip the model's own validation: the service checks everything, with the
        # rows it depends on locked, and reports errors we map onto the form.
        pass

    def clean_reason(self):
        try:
            return services.change_reason_clean(self.cleaned_data.get("reason"))
        except ServiceError as exc:
            raise ValidationError(exc.fields.get("reason") or exc.message) from None

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        audit = {"actor": self.actor, "reason": cleaned.get("reason", "")}
        try:
            if self.instance._state.adding:
                parent = cleaned.get("parent")
                self.instance = services.quota_create(
                    entity_type=cleaned["entity_type"],
                    entity_id=cleaned["entity_id"],
                    resource_type=cleaned["resource_type"].slug,
                    parent_id=parent.id if parent else None,
                    limit_value=cleaned["limit_value"],
                    soft_limit=cleaned.get("soft_limit"),
                    burst_limit=cleaned.get("burst_limit"),
                    overcommit_ratio=cleaned.get("overcommit_ratio") or 1,
                    period=cleaned.get("period") or "none",
                    carryover_limit=cleaned.get("carryover_limit") or 0,
                    alert_thresholds=cleaned.get("alert_thresholds") or None,
                    **audit,
                )
            else:
                if "alert_thresholds" in cleaned:
                    # Empty: back to the default (the API sets [] for none).
                    cleaned["alert_thresholds"] = cleaned["alert_thresholds"] or None
                changes = {
                    field: cleaned.get(field)
                    for field in services.UPDATABLE_FIELDS
                    if field in self.changed_data
                    # Left empty, a budget setting stays as it is.
                    and not (
                        field in ("period", "carryover_limit")
                        and cleaned.get(field) in ("", None)
                    )
                }
                self.instance = services.quota_update(
                    quota_id=self.instance.pk,
                    changes=changes,
                    force=cleaned.get("force", False),
                    **audit,
                )
        except ServiceError as exc:
            raise _as_form_error(exc) from None
        return cleaned


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    form = QuotaAdminForm
    # The changelist is the hierarchy console (quotas/admin_console.py): the tree in
    # depth-first order, indented, with a usage bar per row.
    # Few columns, so the tree fits 1400 px: the rest of a quota (burst, overcommit,
    # budget, parent) is on its page and in the CSV export.
    list_display = [
        "tree_entity",
        "resource_type_slug",
        "usage_bar",
        "limit_display",
        "soft_limit_display",
        "available_display",
    ]
    list_filter = [
        "entity_type",
        "resource_type",
        admin_console.SoftLimitFilter,
        admin_console.HardLimitFilter,
    ]
    # No joins on the changelist (see QuotaTreeChangeList); get_queryset's are for
    # the change page.
    list_select_related = False
    search_fields = ["entity_id", "=id"]
    autocomplete_fields = ["parent"]
    # The books in the one amount format, with the unit.
    readonly_fields = [
        "id",
        "used_display",
        "reserved_display",
        "consumed_display",
        "carried_over_display",
        "period_start_display",
        "period_end_display",
        "version",
        "depth",
        "created_at_display",
        "updated_at_display",
    ]
    # Served by quotas_tree_idx (migration 0005), so a page of the tree is an index
    # range, not a sort of the table.
    ordering = admin_console.TREE_ORDERING
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    class Media:
        css = {"all": ["quotas/admin_console.css"]}

    def get_queryset(self, request):
        # The change page shows the resource type and the parent: fetch them with
        # the quota.
        return super().get_queryset(request).select_related("resource_type", "parent")

    def get_changelist(self, request, **kwargs):
        return admin_console.QuotaTreeChangeList

    def render_change_form(
        self, request, context, add=False, change=False, form_url="", obj=None
    ):
        if obj is not None and not add:
            context["hierarchy"] = admin_console.quota_panels(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None:
            # Identity and parent never change after creation (DESIGN §3).
            fields += ["entity_type", "entity_id", "resource_type", "parent"]
        return fields

    def get_fields(self, request, obj=None):
        return [*QUOTA_FORM_FIELDS, "force", "reason", *self.readonly_fields]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        # The form saves through the services in clean(); they record the staff
        # user as the change's author.
        actor = services.Actor.for_staff_user(request.user)
        return type(form.__name__, (form,), {"actor": actor})

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Bulk delete would bypass the service's checks.
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="entity")
    def tree_entity(self, quota):
        return admin_console.tree_entity(quota)

    @admin.display(description="resource type", ordering="resource_type_id")
    def resource_type_slug(self, quota):
        return quota.resource_type_id

    @admin.display(description="usage (used / effective)")
    def usage_bar(self, quota):
        return admin_console.usage_bar(quota)

    @admin.display(description="used")
    def used_display(self, quota):
        return amount_display(quota.used, admin_console.unit_of(quota))

    @admin.display(description="reserved")
    def reserved_display(self, quota):
        return amount_display(quota.reserved, admin_console.unit_of(quota))

    @admin.display(description="consumed")
    def consumed_display(self, quota):
        return amount_display(quota.consumed, admin_console.unit_of(quota))

    @admin.display(description="carried over")
    def carried_over_display(self, quota):
        return amount_display(quota.carried_over, admin_console.unit_of(quota))

    @admin.display(description="period start")
    def period_start_display(self, quota):
        return admin_console.moment(quota.period_start)

    @admin.display(description="period end")
    def period_end_display(self, quota):
        return admin_console.moment(quota.period_end)

    @admin.display(description="created at")
    def created_at_display(self, quota):
        return admin_console.moment(quota.created_at)

    @admin.display(description="updated at")
    def updated_at_display(self, quota):
        return admin_console.moment(quota.updated_at)

    @admin.display(description="hard limit", ordering="limit_value")
    def limit_display(self, quota):
        return amount_display(quota.limit_value, admin_console.unit_of(quota))

    @admin.display(description="soft limit")
    def soft_limit_display(self, quota):
        return amount_display(quota.soft_limit, admin_console.unit_of(quota))

    @admin.display(description="available")
    def available_display(self, quota):
        return amount_display(quota.available, admin_console.unit_of(quota))

    # --- the dashboard and the CSV export ------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("dashboard/", view(self.dashboard_view), name="quotas_dashboard"),
            path(
                "export.csv",
                view(self.export_view),
                name="quotas_quota_export",
            ),
            *super().get_urls(),
        ]

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Quota dashboard",
            "d": dashboard.dashboard(),
        }
        return TemplateResponse(request, "admin/quotas/dashboard.html", context)

    def export_view(self, request):
        """The changelist's quotas as CSV: its filters and search, every page."""
        return export.changelist_csv(
            self, request, "quotas.csv", export.QUOTA_COLUMNS, export.quota_rows
        )

    def changelist_view(self, request, extra_context=None):
        query = request.GET.copy()
        query.pop("p", None)
        extra_context = {
            **(extra_context or {}),
            "export_query": query.urlencode(),
        }
        return super().changelist_view(request, extra_context)

    def save_model(self, request, obj, form, change):
        # The form's clean() already saved through the services.
        pass

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ServiceError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return HttpResponseRedirect(
                request.path.rsplit("/delete/", 1)[0] + "/change/"
            )

    def delete_model(self, request, obj):
        services.quota_delete(
            quota_id=obj.pk, actor=services.Actor.for_staff_user(request.user)
        )


# The admin's front page links to the dashboard; one empty marker everywhere.
admin.site.index_template = "admin/quotas/index.html"
admin.site.empty_value_display = EMPTY

# The read-only audit trail and the API keys have modules of their own; importing
# them registers them.
from quotas import admin_audit, admin_keys  # noqa: E402, F401
