"""Events and webhooks in the admin (DESIGN §7a).

Endpoints are added and changed through the same services as the API
(``quotas.events.endpoints``): the SSRF guard, the event types and the scope are
checked there and their errors shown on the form. The secret is shown once, in
the message after the endpoint is added. "Send test event" queues a
``webhook.test`` event for each selected endpoint alone; deliveries can be sent
again ("redeliver"). The delivery log is read-only, linked from each endpoint.
Events themselves are read-only: the outbox is append-only.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from horizon_quota.errors import ServiceError
from quotas.events import delivery, endpoints
from quotas.events.models import (
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from quotas.events.selectors import FEED_TYPES
from quotas.events.serializers import scope_text

FORM_FIELDS = ["url", "event_types", "scope", "enabled", "description"]


class WebhookEndpointForm(forms.ModelForm):
    url = forms.CharField(
        max_length=endpoints.URL_MAX_LENGTH,
        help_text="http or https; it must reach a public address unless "
        "WEBHOOK_ALLOW_PRIVATE is true.",
    )
    event_types = forms.MultipleChoiceField(
        choices=[(name, name) for name in FEED_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every type.",
    )
    scope = forms.CharField(
        required=False,
        help_text="organization:ID, team:ID, user:ID or a quota id (meaning its "
        "entity); empty for every quota.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = FORM_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            self.initial["scope"] = scope_text(self.instance) or ""
            self.initial["event_types"] = list(self.instance.event_types)

    def _post_clean(self):
        # The service checks everything; its errors are mapped onto the form.
        pass

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            if self.instance._state.adding:
                self.instance = endpoints.endpoint_create(
                    url=cleaned["url"],
                    event_types=cleaned.get("event_types") or [],
                    scope=cleaned.get("scope") or None,
                    enabled=cleaned.get("enabled", False),
                    description=cleaned.get("description") or "",
                )
            else:
                changes = {
                    name: cleaned.get(name)
                    for name in FORM_FIELDS
                    if name in self.changed_data
                }
                if "scope" in changes:
                    changes["scope"] = changes["scope"] or None
                self.instance = endpoints.endpoint_update(
                    endpoint_id=self.instance.pk, changes=changes
                )
        except ServiceError as exc:
            mapped = {
                (field if field in FORM_FIELDS else "__all__"): texts
                for field, texts in exc.fields.items()
            }
            raise ValidationError(mapped or exc.message) from None
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = [
        "url",
        "enabled",
        "types",
        "scope_shown",
        "failing_since",
        "disabled_reason",
        "log_link",
    ]
    list_filter = ["enabled"]
    search_fields = ["url", "description"]
    readonly_fields = ["failing_since", "disabled_reason", "created_at", "log_link"]
    actions = ["send_test_event"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return FORM_FIELDS
        return [*FORM_FIELDS, *self.readonly_fields]

    @admin.display(description="event types")
    def types(self, endpoint):
        return ", ".join(endpoint.event_types) or "all"

    @admin.display(description="scope")
    def scope_shown(self, endpoint):
        return scope_text(endpoint) or "all quotas"

    @admin.display(description="delivery log")
    def log_link(self, endpoint):
        if endpoint.pk is None:
            return "-"
        url = reverse("admin:events_webhookattempt_changelist")
        return format_html(
            '<a href="{}?endpoint__id__exact={}">delivery log</a>', url, endpoint.pk
        )

    def save_model(self, request, obj, form, change):
        # WebhookEndpointForm.clean() saved it through the service.
        pass

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(
            request,
            f"The secret of this endpoint, shown this once: {obj.secret} — keep it "
            "to verify the signatures of its deliveries.",
            level=messages.WARNING,
        )
        return super().response_add(request, obj, post_url_continue)

    def get_deleted_objects(self, objs, request):
        deleted, counts, _, protected = super().get_deleted_objects(objs, request)
        # Its deliveries and their log go with it (endpoint_delete), though no one
        # deletes those one by one.
        return deleted, counts, set(), protected

    def delete_model(self, request, obj):
        endpoints.endpoint_delete(endpoint_id=obj.pk)

    def delete_queryset(self, request, queryset):
        for endpoint_id in queryset.values_list("pk", flat=True):
            endpoints.endpoint_delete(endpoint_id=endpoint_id)

    @admin.action(description="Send a test event to the selected endpoints")
    def send_test_event(self, request, queryset):
        for endpoint in queryset:
            endpoints.endpoint_send_test(endpoint_id=endpoint.pk)
        self.message_user(
            request,
            f"Queued a test event for {queryset.count()} endpoint(s); the next "
            "delivery pass sends it.",
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "event_id_shown",
        "endpoint",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
    ]
    list_select_related = ["endpoint", "event"]
    list_filter = ["status"]
    ordering = ["-id"]
    actions = ["redeliver"]

    @admin.display(description="event")
    def event_id_shown(self, delivery_row):
        return delivery_row.event.id

    @admin.action(description="Redeliver the selected deliveries")
    def redeliver(self, request, queryset):
        count = delivery.deliveries_redeliver(
            delivery_ids=list(queryset.values_list("id", flat=True))
        )
        self.message_user(
            request, f"{count} delivery(ies) will be sent again on the next pass."
        )


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ReadOnlyAdmin):
    list_display = [
        "at",
        "event_id",
        "endpoint",
        "attempt",
        "status_code",
        "duration_ms",
        "error",
        "next_attempt_at",
    ]
    list_select_related = ["endpoint"]
    list_filter = ["endpoint"]
    ordering = ["-id"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "occurred_at", "entity_type", "entity_id"]
    list_filter = ["type"]
    search_fields = ["entity_id"]
    ordering = ["-row_id"]
