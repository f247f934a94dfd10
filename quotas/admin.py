from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect

from horizon_quota.errors import ServiceError
from quotas import services
from quotas.models import ApiKey, Quota, ResourceType

QUOTA_FORM_FIELDS = [
    "entity_type",
    "entity_id",
    "resource_type",
    "parent",
    "limit_value",
    "soft_limit",
    "burst_limit",
    "overcommit_ratio",
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

    class Meta:
        model = Quota
        fields = QUOTA_FORM_FIELDS

    def _post_clean(self):
        # Skip the model's own validation: the service checks everything, with the
        # rows it depends on locked, and reports errors we map onto the form.
        pass

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
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
                )
            else:
                changes = {
                    field: cleaned.get(field)
                    for field in services.UPDATABLE_FIELDS
                    if field in self.changed_data
                }
                self.instance = services.quota_update(
                    quota_id=self.instance.pk,
                    changes=changes,
                    force=cleaned.get("force", False),
                )
        except ServiceError as exc:
            raise _as_form_error(exc) from None
        return cleaned


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    form = QuotaAdminForm
    list_display = [
        "entity_id",
        "entity_type",
        "resource_type",
        "parent",
        "limit_value",
        "effective_limit_display",
        "used",
        "available_display",
        "updated_at",
    ]
    list_filter = ["entity_type", "resource_type"]
    list_select_related = ["resource_type", "parent"]
    search_fields = ["entity_id", "=id"]
    autocomplete_fields = ["parent"]
    readonly_fields = ["id", "used", "version", "depth", "created_at", "updated_at"]
    ordering = ["-created_at"]
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None:
            # Identity and parent never change after creation (DESIGN §3).
            fields += ["entity_type", "entity_id", "resource_type", "parent"]
        return fields

    def get_fields(self, request, obj=None):
        return [*QUOTA_FORM_FIELDS, "force", *self.readonly_fields]

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Bulk delete would bypass the service's checks.
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="effective limit")
    def effective_limit_display(self, quota):
        return quota.effective_limit

    @admin.display(description="available")
    def available_display(self, quota):
        return quota.available

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
        services.quota_delete(quota_id=obj.pk)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "role",
        "scope",
        "created_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["role"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    autocomplete_fields = ["scope"]

    def has_add_permission(self, request):
        # Keys are made with `manage.py create_api_key`, which shows the secret once.
        return False
