"""The audit trail of quota changes in the admin: read-only.

Rows are written only by the quota services (``quotas.services``); nobody adds,
changes or deletes them here (and the database refuses updates and deletes).
"""

from django.contrib import admin

from quotas.models import QuotaChange


@admin.register(QuotaChange)
class QuotaChangeAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "action",
        "entity_type",
        "entity_id",
        "resource_type",
        "actor_type",
        "actor_name",
        "reason",
    ]
    list_filter = ["action", "actor_type", "entity_type", "resource_type"]
    search_fields = ["entity_id", "actor_name", "reason", "=quota__id"]
    ordering = ["-created_at", "-id"]
    # Counting millions of rows on every page is the slow part of a changelist.
    show_full_result_count = False
    readonly_fields = [
        "id",
        "quota_id",
        "entity_type",
        "entity_id",
        "resource_type",
        "action",
        "actor_type",
        "actor_id",
        "actor_name",
        "changes",
        "reason",
        "created_at",
    ]
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
